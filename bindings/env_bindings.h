// pybind11 glue shared by every environment family (metakern.envs). A family header provides
//   static Family from_args(const std::vector<std::uintptr_t>& ptrs, const std::vector<int64_t>& ints,
//                           const std::vector<double>& floats);
// and one line here binds its step / reset / observe for the CPU module (bind_env_cpu) or the CUDA
// module (bind_env_cuda). Python (metakern/envs/core.py) has already validated every tensor; these
// functions only check counts and null pointers.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "envs/env_driver.h"

namespace metakern {
namespace envs {

namespace py = pybind11;
using Ptrs = std::vector<std::uintptr_t>;
using Ints = std::vector<int64_t>;
using Floats = std::vector<double>;

inline void check_count(size_t got, size_t want, const char* what) {
  if (got != want) {
    throw std::invalid_argument(std::string("metakern envs: ") + what + " needs " + std::to_string(want) +
                                " entries, got " + std::to_string(got));
  }
}

inline void check_ptrs(const Ptrs& p, const char* what) {
  for (size_t k = 0; k < p.size(); ++k) {
    if (p[k] == 0) throw std::invalid_argument(std::string("metakern envs: null pointer ") + std::to_string(k) + " in " + what);
  }
}

// bk: t, episode, task, trial, counter, status, prev_action, prev_reward, new_episode
inline Bookkeeping make_bookkeeping(const Ptrs& p) {
  check_count(p.size(), 9, "bookkeeping");
  check_ptrs(p, "bookkeeping");
  return Bookkeeping{as_ptr<int32_t>(p[0]), as_ptr<int32_t>(p[1]), as_ptr<int32_t>(p[2]), as_ptr<int64_t>(p[3]),
                     as_ptr<int64_t>(p[4]), as_ptr<uint8_t>(p[5]), as_ptr<int32_t>(p[6]), as_ptr<float>(p[7]),
                     as_ptr<uint8_t>(p[8])};
}

// cfg: B, max_steps, episodes_per_trial, explore_episodes, autoreset, task_lo, task_hi, resample_tasks,
// num_threads
inline DriverConfig make_config(const Ints& c, uint64_t seed) {
  check_count(c.size(), 9, "config");
  DriverConfig cfg{c[0], static_cast<int32_t>(c[1]), static_cast<int32_t>(c[2]), static_cast<int32_t>(c[3]),
                   static_cast<int32_t>(c[4]), static_cast<int32_t>(c[5]), static_cast<int32_t>(c[6]),
                   static_cast<int32_t>(c[7]), seed, static_cast<int32_t>(c[8])};
  if (cfg.B < 0 || cfg.episodes_per_trial < 1 || cfg.autoreset < 0 || cfg.autoreset > 2) {
    throw std::invalid_argument("metakern envs: invalid driver config");
  }
  if (cfg.resample_tasks && !(0 <= cfg.task_lo && cfg.task_lo < cfg.task_hi)) {
    throw std::invalid_argument("metakern envs: invalid task range");
  }
  return cfg;
}

// out: obs, reward, terminated, truncated, trial_done, explore, episode, final_obs (final_obs may be 0)
template <typename ObsT>
StepOutputs<ObsT> make_outputs(const Ptrs& p) {
  check_count(p.size(), 8, "outputs");
  Ptrs required(p.begin(), p.begin() + 7);
  check_ptrs(required, "outputs");
  return StepOutputs<ObsT>{as_ptr<ObsT>(p[0]),   as_ptr<float>(p[1]),   as_ptr<uint8_t>(p[2]),
                           as_ptr<uint8_t>(p[3]), as_ptr<uint8_t>(p[4]), as_ptr<uint8_t>(p[5]),
                           as_ptr<int32_t>(p[6]), as_ptr<ObsT>(p[7])};
}

// The three objects every call builds from its Python arguments.
template <typename Family>
struct EnvCall {
  Family f;
  Bookkeeping bk;
  DriverConfig cfg;
  EnvCall(const Ptrs& fp, const Ints& fi, const Floats& ff, const Ptrs& bkp, const Ints& c, uint64_t seed)
      : f(Family::from_args(fp, fi, ff)), bk(make_bookkeeping(bkp)), cfg(make_config(c, seed)) {}
};

template <typename Family>
void bind_env_cpu(py::module_& m, const std::string& name) {
  using ObsT = typename Family::obs_t;
  m.def(
      (name + "_step").c_str(),
      [](const Ptrs& fp, const Ints& fi, const Floats& ff, const Ptrs& bkp, const Ints& c, uint64_t seed,
         std::uintptr_t actions, const Ptrs& outp, std::uintptr_t errors) {
        const EnvCall<Family> e(fp, fi, ff, bkp, c, seed);
        const StepOutputs<ObsT> out = make_outputs<ObsT>(outp);
        check_ptr(actions, "actions");
        check_ptr(errors, "errors");
        py::gil_scoped_release release;
        env_step_cpu(e.f, e.bk, e.cfg, as_ptr<const int32_t>(actions), out, as_ptr<int64_t>(errors));
      },
      "step every environment (see cpp/envs/env_driver.h)");
  m.def(
      (name + "_reset").c_str(),
      [](const Ptrs& fp, const Ints& fi, const Floats& ff, const Ptrs& bkp, const Ints& c, uint64_t seed,
         std::uintptr_t mask, bool new_trial, std::uintptr_t obs) {
        const EnvCall<Family> e(fp, fi, ff, bkp, c, seed);
        check_ptr(obs, "obs");
        py::gil_scoped_release release;
        env_reset_cpu(e.f, e.bk, e.cfg, as_ptr<const uint8_t>(mask), new_trial, as_ptr<ObsT>(obs));
      },
      "reset the masked environments (mask 0: all)");
  m.def(
      (name + "_observe").c_str(),
      [](const Ptrs& fp, const Ints& fi, const Floats& ff, const Ptrs& bkp, const Ints& c, uint64_t seed,
         std::uintptr_t obs) {
        const EnvCall<Family> e(fp, fi, ff, bkp, c, seed);
        check_ptr(obs, "obs");
        py::gil_scoped_release release;
        env_observe_cpu(e.f, e.bk, e.cfg, as_ptr<ObsT>(obs));
      },
      "write the current observation of every environment");
}

}  // namespace envs
}  // namespace metakern
