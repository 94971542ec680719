// CUDA side of the environment driver (env_driver.h): one thread per environment, batch on grid
// axis 0 (B up to 2^31 - 1). Everything runs asynchronously on the caller's stream; invalid input
// is reported through a device-side error array that Python turns into an asynchronous assertion
// (torch._assert_async), so a step never needs a host round trip.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "envs/env_driver.h"

namespace metakern {
namespace envs {

constexpr int kEnvThreads = 256;

inline unsigned env_blocks(int64_t B) { return static_cast<unsigned>((B + kEnvThreads - 1) / kEnvThreads); }

// errors: two uint64 on the device, set to all ones (no error) by the launcher; atomicMin keeps the
// index of the first offending environment.
template <typename Family>
__global__ void env_check_kernel(Family f, Bookkeeping bk, int64_t B, const int32_t* actions,
                                 unsigned long long* errors) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B) return;
  int64_t bad = 0, fin = 0;
  check_env(f, bk, i, actions + i * f.action_dim, &bad, &fin);
  if (bad) atomicMin(&errors[0], static_cast<unsigned long long>(i));
  if (fin) atomicMin(&errors[1], static_cast<unsigned long long>(i));
}

template <typename Family>
__global__ void env_step_kernel(Family f, Bookkeeping bk, DriverConfig cfg, const int32_t* actions,
                                StepOutputs<typename Family::obs_t> out, const unsigned long long* errors) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= cfg.B) return;
  if (errors[0] != ~0ULL || errors[1] != ~0ULL) return;
  step_env(f, bk, cfg, i, actions + i * f.action_dim, out);
}

template <typename Family>
__global__ void env_reset_kernel(Family f, Bookkeeping bk, DriverConfig cfg, const uint8_t* mask, bool new_trial,
                                 typename Family::obs_t* obs) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= cfg.B) return;
  if (mask == nullptr || mask[i]) reset_env(f, bk, cfg, i, new_trial, obs);
}

template <typename Family>
__global__ void env_observe_kernel(Family f, Bookkeeping bk, int64_t B, typename Family::obs_t* obs) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B) return;
  write_obs(f, bk, i, obs);
}

// Launchers. Return "" on success, else the CUDA error string.
inline const char* launch_status() {
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

template <typename Family>
const char* env_step_cuda(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, const int32_t* actions,
                          const StepOutputs<typename Family::obs_t>& out, unsigned long long* errors, void* stream_) {
  if (cfg.B <= 0) return "";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  cudaError_t err = cudaMemsetAsync(errors, 0xFF, 2 * sizeof(unsigned long long), stream);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  env_check_kernel<<<env_blocks(cfg.B), kEnvThreads, 0, stream>>>(f, bk, cfg.B, actions, errors);
  env_step_kernel<<<env_blocks(cfg.B), kEnvThreads, 0, stream>>>(f, bk, cfg, actions, out, errors);
  return launch_status();
}

template <typename Family>
const char* env_reset_cuda(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, const uint8_t* mask,
                           bool new_trial, typename Family::obs_t* obs, void* stream_) {
  if (cfg.B <= 0) return "";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  env_reset_kernel<<<env_blocks(cfg.B), kEnvThreads, 0, stream>>>(f, bk, cfg, mask, new_trial, obs);
  return launch_status();
}

template <typename Family>
const char* env_observe_cuda(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg,
                             typename Family::obs_t* obs, void* stream_) {
  if (cfg.B <= 0) return "";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  env_observe_kernel<<<env_blocks(cfg.B), kEnvThreads, 0, stream>>>(f, bk, cfg.B, obs);
  return launch_status();
}

// One line per family in its .cu file: compiles the three launchers for that family, which the
// pybind11 module (plain C++) calls through the declarations in env_cuda_api.h.
#define METAKERN_INSTANTIATE_ENV_CUDA(Family)                                                              \
  template const char* env_step_cuda<Family>(const Family&, const Bookkeeping&, const DriverConfig&,       \
                                             const int32_t*, const StepOutputs<Family::obs_t>&,            \
                                             unsigned long long*, void*);                                  \
  template const char* env_reset_cuda<Family>(const Family&, const Bookkeeping&, const DriverConfig&,      \
                                              const uint8_t*, bool, Family::obs_t*, void*);                \
  template const char* env_observe_cuda<Family>(const Family&, const Bookkeeping&, const DriverConfig&,    \
                                                Family::obs_t*, void*);

}  // namespace envs
}  // namespace metakern
