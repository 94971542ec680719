// metakern._C_cuda: CUDA kernels. Python passes data pointers, sizes, the device index and the
// current torch stream (as an integer); kernels run asynchronously on that stream.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "common.h"
#include "env_registry.h"
#include "scan/linear_scan.h"

namespace py = pybind11;
using namespace metakern;

namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("metakern CUDA: ") + what + ": " + cudaGetErrorString(err));
}

void check_launch(const char* err, const char* what) {
  if (err != nullptr && err[0] != '\0') throw std::runtime_error(std::string("metakern CUDA: ") + what + ": " + err);
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "metakern CUDA kernels";
  m.attr("__version__") = METAKERN_VERSION;
  metakern::envs::bind_registered_envs(m);
  m.attr("archs") = METAKERN_CUDA_ARCHS;

  m.def(
      "linear_scan",
      [](int dtype, std::uintptr_t x, std::uintptr_t a, std::uintptr_t carry, std::uintptr_t y,
         int64_t B, int64_t T, bool reverse, bool time_major, int device, std::uintptr_t stream) {
        const DType dt = to_dtype(dtype);
        check_sizes(B, T);
        check_ptr(x, "x");
        check_ptr(a, "a");
        check_ptr(carry, "carry");
        check_ptr(y, "y");
        py::gil_scoped_release release;
        check_cuda(cudaSetDevice(device), "cudaSetDevice");
        check_launch(linear_scan_cuda(dt, as_ptr<const void>(x), as_ptr<const void>(a),
                                      as_ptr<const void>(carry), as_ptr<void>(y), B, T, reverse,
                                      time_major, reinterpret_cast<void*>(stream)),
                     "linear_scan");
      },
      py::arg("dtype"), py::arg("x"), py::arg("a"), py::arg("carry"), py::arg("y"), py::arg("B"),
      py::arg("T"), py::arg("reverse"), py::arg("time_major"), py::arg("device"), py::arg("stream"));

  m.def("runtime_version", []() {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });
  m.def("driver_version", []() {
    int v = 0;
    return cudaDriverGetVersion(&v) == cudaSuccess ? v : 0;
  });
  m.def("device_count", []() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  });
}
