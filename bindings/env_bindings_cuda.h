// CUDA counterpart of bind_env_cpu (env_bindings.h): the same three functions, launched
// asynchronously on the caller's stream; errors is a 2-element uint64 device array (see
// env_driver_cuda.cuh).
#pragma once
#include <cuda_runtime.h>

#include "env_bindings.h"
#include "envs/env_cuda_api.h"

namespace metakern {
namespace envs {

inline void check_cuda_call(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("metakern CUDA: ") + what + ": " + cudaGetErrorString(err));
}

inline void check_cuda_launch(const char* err, const std::string& what) {
  if (err != nullptr && err[0] != '\0') throw std::runtime_error("metakern CUDA: " + what + ": " + err);
}

template <typename Family>
void bind_env_cuda(py::module_& m, const std::string& name) {
  using ObsT = typename Family::obs_t;
  m.def((name + "_step").c_str(), [name](const Ptrs& fp, const Ints& fi, const Floats& ff, const Ptrs& bkp, const Ints& c,
                                        uint64_t seed, std::uintptr_t actions, const Ptrs& outp, std::uintptr_t errors,
                                        int device, std::uintptr_t stream) {
    const EnvCall<Family> e(fp, fi, ff, bkp, c, seed);
    const StepOutputs<ObsT> out = make_outputs<ObsT>(outp);
    check_ptr(actions, "actions");
    check_ptr(errors, "errors");
    py::gil_scoped_release release;
    check_cuda_call(cudaSetDevice(device), "cudaSetDevice");
    check_cuda_launch(env_step_cuda(e.f, e.bk, e.cfg, as_ptr<const int32_t>(actions), out,
                                    as_ptr<unsigned long long>(errors), reinterpret_cast<void*>(stream)),
                      name + "_step");
  });
  m.def((name + "_reset").c_str(), [name](const Ptrs& fp, const Ints& fi, const Floats& ff, const Ptrs& bkp, const Ints& c,
                                         uint64_t seed, std::uintptr_t mask, bool new_trial, std::uintptr_t obs,
                                         int device, std::uintptr_t stream) {
    const EnvCall<Family> e(fp, fi, ff, bkp, c, seed);
    check_ptr(obs, "obs");
    py::gil_scoped_release release;
    check_cuda_call(cudaSetDevice(device), "cudaSetDevice");
    check_cuda_launch(env_reset_cuda(e.f, e.bk, e.cfg, as_ptr<const uint8_t>(mask), new_trial, as_ptr<ObsT>(obs),
                                     reinterpret_cast<void*>(stream)),
                      name + "_reset");
  });
  m.def((name + "_observe").c_str(), [name](const Ptrs& fp, const Ints& fi, const Floats& ff, const Ptrs& bkp,
                                           const Ints& c, uint64_t seed, std::uintptr_t obs, int device,
                                           std::uintptr_t stream) {
    const EnvCall<Family> e(fp, fi, ff, bkp, c, seed);
    check_ptr(obs, "obs");
    py::gil_scoped_release release;
    check_cuda_call(cudaSetDevice(device), "cudaSetDevice");
    check_cuda_launch(env_observe_cuda(e.f, e.bk, e.cfg, as_ptr<ObsT>(obs), reinterpret_cast<void*>(stream)),
                      name + "_observe");
  });
}

}  // namespace envs
}  // namespace metakern
