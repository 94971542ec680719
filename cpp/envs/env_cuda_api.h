// Declarations of the CUDA environment launchers (defined in env_driver_cuda.cuh and instantiated
// per family in cpp/envs/<family>_cuda.cu), for the pybind11 module, which is plain C++.
#pragma once
#include <cstdint>

#include "envs/env_driver.h"

namespace metakern {
namespace envs {

template <typename Family>
const char* env_step_cuda(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, const int32_t* actions,
                          const StepOutputs<typename Family::obs_t>& out, unsigned long long* errors, void* stream);
template <typename Family>
const char* env_reset_cuda(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, const uint8_t* mask,
                           bool new_trial, typename Family::obs_t* obs, void* stream);
template <typename Family>
const char* env_observe_cuda(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg,
                             typename Family::obs_t* obs, void* stream);

}  // namespace envs
}  // namespace metakern
