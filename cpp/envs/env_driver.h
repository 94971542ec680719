// Shared batch driver for the vectorized environments (metakern.envs).
//
// A *family* (Krazy World, mazes, GridNavi, tabular MDPs, IPD) supplies only its rules, as a small
// struct with three per-environment methods, callable from host and device code:
//
//   struct Family {
//     using obs_t = uint8_t;                 // element type of one observation
//     int64_t obs_size;                      // elements per environment
//     int32_t action_dim, reward_dim;        // ints per action, floats per reward (IPD: 2, 2)
//     int32_t num_actions;                   // valid actions are 0 .. num_actions-1 per component
//     static Family from_args(ptrs, ints, floats);                      // built by the bindings
//     MK_HD void reset(int64_t i, int32_t task, uint64_t rng) const;     // start an episode
//     MK_HD bool step(int64_t i, int32_t task, const int32_t* action,   // one step; true if the
//                     float* reward, uint64_t rng) const;               // episode terminated
//     MK_HD void observe(int64_t i, int32_t task, obs_t* out,           // write the observation
//                        const EnvCtx& ctx) const;
//   };
//
// `task` indexes the family's task pool (tensors with a leading task dimension); per-environment
// mutable state lives in the family's own [B, ...] arrays. `rng` is 64 random bits for this
// (environment, step) or (environment, reset), from the counter-based generator below.
//
// The driver owns everything that is the same for every family: the time limit, the episodes of
// a meta-RL trial, the task drawn for each new trial, the three gymnasium autoreset modes, the
// previous action / reward inputs of recurrent agents, and input validation. It is written once
// here, in the per-environment function `step_env`, and run by `env_step_cpu` (OpenMP over the
// batch) and by the CUDA kernel in env_driver_cuda.cuh (one thread per environment). The readable
// numpy reference of the same logic is metakern/envs/core.py (`_reference_step`); the two must
// agree exactly.
#pragma once
#include <cstdint>
#ifndef __CUDACC__
#include <omp.h>

#include "common/work_claims.h"
#endif

#ifdef __CUDACC__
#define MK_HD __host__ __device__ __forceinline__
#define MK_HD_INLINE MK_HD
#else
#define MK_HD inline
// Inlined even where the compiler would not: the per-environment step, and a family's hot
// observation, so that a thread's loop over its environments is one function (see for_each_env).
#define MK_HD_INLINE inline __attribute__((always_inline))
#endif

namespace metakern {
namespace envs {

// Autoreset modes, as gymnasium.vector.AutoresetMode.
enum AutoresetMode : int32_t { NEXT_STEP = 0, SAME_STEP = 1, DISABLED = 2 };

// Per-environment status.
enum Status : uint8_t { RUNNING = 0, PENDING_RESET = 1, FINISHED = 2 };

// Counter-based random numbers: splitmix64 finaliser. Every random choice is a pure function of
// (seed, environment index, counter), so CPU, CUDA and the numpy reference draw the same numbers.
MK_HD uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

MK_HD uint64_t rng_key(uint64_t seed, int64_t env, uint64_t counter, uint64_t stream) {
  return mix64(mix64(mix64(seed ^ (stream * 0xD1B54A32D192ED03ULL)) + static_cast<uint64_t>(env)) + counter);
}

// Uniform integer in [0, n) from 64 random bits (multiply-high on the top 32 bits; n < 2^31).
MK_HD uint32_t rng_below(uint64_t bits, uint32_t n) {
  return static_cast<uint32_t>(((bits >> 32) * static_cast<uint64_t>(n)) >> 32);
}

// Uniform float in [0, 1) with 24 random bits (exactly representable, same on every backend).
MK_HD float rng_unit(uint64_t bits) { return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f); }

// Random streams: which purpose a key is for, so draws never collide.
constexpr uint64_t STREAM_TASK = 1;   // the task of a new trial
constexpr uint64_t STREAM_STEP = 2;   // randomness inside a family's step (tabular transitions)
constexpr uint64_t STREAM_RESET = 3;  // randomness inside a family's reset

// What a family's `observe` may read besides its own state.
struct EnvCtx {
  int32_t prev_action;  // last action taken (first component), -1 at the start of a trial
  float prev_reward;    // last reward (first component), 0 at the start of a trial
  uint8_t new_episode;  // 1 on the first observation of an episode
  int32_t episode;      // episode index within the trial
  int32_t t;            // steps taken in the current episode
};

// Bookkeeping shared by all families: structure of arrays over B environments.
struct Bookkeeping {
  int32_t* t;            // [B] steps taken in the current episode
  int32_t* episode;      // [B] episode index within the current trial
  int32_t* task;         // [B] task index (into the family's task pool)
  int64_t* trial;        // [B] trials completed since the last full reset (task-draw counter)
  int64_t* counter;      // [B] steps taken since the last full reset (step-randomness counter)
  uint8_t* status;       // [B] Status
  int32_t* prev_action;  // [B] see EnvCtx
  float* prev_reward;    // [B]
  uint8_t* new_episode;  // [B]
};

struct DriverConfig {
  int64_t B;
  int32_t max_steps;          // time limit per episode (truncation); <= 0: none
  int32_t episodes_per_trial; // >= 1
  int32_t explore_episodes;   // episodes [0, explore_episodes) of a trial are exploratory
  int32_t autoreset;          // AutoresetMode
  int32_t task_lo, task_hi;   // a new trial draws its task uniformly from [task_lo, task_hi) ...
  int32_t resample_tasks;     // ... when this is nonzero; else the task is kept
  uint64_t seed;
  int32_t num_threads;        // CPU threads (torch.get_num_threads() from Python); <= 0: OpenMP's default
};


// Outputs of one batched step. Arrays are [B] except obs/final_obs ([B, obs_size]) and reward
// ([B, reward_dim]); final_obs may be null (it is written only in SAME_STEP mode, for the
// environments whose episode ended; other rows are left as they were).
template <typename ObsT>
struct StepOutputs {
  ObsT* obs;
  float* reward;
  uint8_t* terminated;
  uint8_t* truncated;
  uint8_t* trial_done;   // the episode that ended was the last of its trial
  uint8_t* explore;      // the step belonged to an exploratory episode
  int32_t* episode;      // episode index of the step (before any reset)
  ObsT* final_obs;
};

// Start a new episode of environment i (its task is already set).
template <typename Family>
MK_HD void begin_episode(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, int64_t i) {
  bk.t[i] = 0;
  bk.new_episode[i] = 1;
  bk.status[i] = RUNNING;
  f.reset(i, bk.task[i], rng_key(cfg.seed, i, static_cast<uint64_t>(bk.counter[i]), STREAM_RESET));
}

template <typename Family>
MK_HD_INLINE void write_obs(const Family& f, const Bookkeeping& bk, int64_t i, typename Family::obs_t* out) {
  EnvCtx ctx{bk.prev_action[i], bk.prev_reward[i], bk.new_episode[i], bk.episode[i], bk.t[i]};
  f.observe(i, bk.task[i], out + i * f.obs_size, ctx);
}

// The task of trial number `trial` of environment i when tasks are resampled.
MK_HD int32_t draw_task(const DriverConfig& cfg, int64_t i, int64_t trial) {
  const uint32_t n = static_cast<uint32_t>(cfg.task_hi - cfg.task_lo);
  return cfg.task_lo + static_cast<int32_t>(rng_below(rng_key(cfg.seed, i, static_cast<uint64_t>(trial), STREAM_TASK), n));
}

// Full reset of environment i: a new trial from scratch (counters to zero, the task drawn for
// trial 0 when tasks are resampled, else the task already set). Used by reset() and set_tasks().
template <typename Family>
MK_HD void reset_env(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, int64_t i, bool new_trial,
                     typename Family::obs_t* obs) {
  if (new_trial) {
    bk.trial[i] = 0;
    bk.counter[i] = 0;
    bk.episode[i] = 0;
    bk.prev_action[i] = -1;
    bk.prev_reward[i] = 0.0f;
    if (cfg.resample_tasks) bk.task[i] = draw_task(cfg, i, 0);
  }
  begin_episode(f, bk, cfg, i);
  write_obs(f, bk, i, obs);
}

// One step of environment i. `a` points at its action_dim ints, already validated.
template <typename Family>
MK_HD_INLINE void step_env(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, int64_t i, const int32_t* a,
                           const StepOutputs<typename Family::obs_t>& out) {
  float* r = out.reward + i * f.reward_dim;
  out.episode[i] = bk.episode[i];
  out.explore[i] = bk.episode[i] < cfg.explore_episodes;
  if (bk.status[i] == PENDING_RESET) {  // NEXT_STEP: this call resets instead of stepping
    for (int32_t k = 0; k < f.reward_dim; ++k) r[k] = 0.0f;
    out.terminated[i] = 0;
    out.truncated[i] = 0;
    out.trial_done[i] = 0;
    begin_episode(f, bk, cfg, i);
    write_obs(f, bk, i, out.obs);
    return;
  }
  const uint64_t key = rng_key(cfg.seed, i, static_cast<uint64_t>(bk.counter[i]), STREAM_STEP);
  const bool term = f.step(i, bk.task[i], a, r, key);
  bk.counter[i] += 1;
  bk.t[i] += 1;
  bk.prev_action[i] = a[0];
  bk.prev_reward[i] = r[0];
  bk.new_episode[i] = 0;
  const bool trunc = !term && cfg.max_steps > 0 && bk.t[i] >= cfg.max_steps;
  out.terminated[i] = term;
  out.truncated[i] = trunc;
  out.trial_done[i] = 0;
  if (!(term || trunc)) {
    write_obs(f, bk, i, out.obs);
    return;
  }
  // The episode ended: its last observation, with the task and counters it was played with.
  if (cfg.autoreset != SAME_STEP) {
    write_obs(f, bk, i, out.obs);
  } else if (out.final_obs != nullptr) {
    write_obs(f, bk, i, out.final_obs);
  }
  // Then the trial bookkeeping: next episode, or the first episode of a new trial.
  bk.episode[i] += 1;
  if (bk.episode[i] >= cfg.episodes_per_trial) {
    out.trial_done[i] = 1;
    bk.episode[i] = 0;
    bk.trial[i] += 1;
    bk.prev_action[i] = -1;
    bk.prev_reward[i] = 0.0f;
    if (cfg.resample_tasks) bk.task[i] = draw_task(cfg, i, bk.trial[i]);
  }
  if (cfg.autoreset == SAME_STEP) {
    begin_episode(f, bk, cfg, i);
    write_obs(f, bk, i, out.obs);
  } else {
    bk.status[i] = cfg.autoreset == NEXT_STEP ? PENDING_RESET : FINISHED;
  }
}

// Validation pass: how many environments have an out-of-range action component, and how many
// finished environments (DISABLED mode) are being stepped. Nothing is stepped when either is > 0.
template <typename Family>
MK_HD void check_env(const Family& f, const Bookkeeping& bk, int64_t i, const int32_t* a, int64_t* bad_action,
                     int64_t* stepped_finished) {
  for (int32_t k = 0; k < f.action_dim; ++k) {
    if (a[k] < 0 || a[k] >= f.num_actions) {
      *bad_action = 1;
      break;
    }
  }
  if (bk.status[i] == FINISHED) *stepped_finished = 1;
}

#ifndef __CUDACC__
// ---- CPU drivers (OpenMP over environments) -------------------------------------------------------

// OpenMP threads for a CPU call: one below 256 environments (a parallel region costs more than it
// saves there), else the caller's count.
inline int env_threads(const DriverConfig& cfg) {
  if (cfg.B < 256) return 1;
  return cfg.num_threads > 0 ? cfg.num_threads : omp_get_max_threads();
}

// body(f, bk, cfg, i) for every environment i, OpenMP over the batch in chunks of kEnvChunk
// environments: each thread runs its own contiguous range of chunks, then takes chunks a slower
// thread has not reached (common/work_claims.h; Krazy World, B=8192, on the 2-core shared VM: a
// median of 56.1 M steps/s over 13 runs against 47.1 for schedule(static), runs alternating).
// Each thread works on its own copies of the structs (a few hundred bytes of pointers and sizes):
// the byte stores of a step may alias anything reachable through a reference, and would force a
// reload of every member after each of them. With the step and the hot observation inlined into
// this one loop, a Krazy World step took 10-15% less time (29.0 -> 26.2 ns per env-step on one
// Zen 4 core, through the binding).
constexpr int64_t kEnvChunk = 256;

template <typename Family, typename Body>
void for_each_env(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, const Body& body) {
  const int threads = env_threads(cfg);
  const int64_t chunks = (cfg.B + kEnvChunk - 1) / kEnvChunk;
  WorkClaims claims(chunks, threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const Family fl = f;
    const Bookkeeping bkl = bk;
    const DriverConfig cfgl = cfg;
    const Body bl = body;
    const int t = omp_get_thread_num();
    for (int64_t c; (c = claims.claim(t)) >= 0;) {
      const int64_t end = c * kEnvChunk + kEnvChunk < cfgl.B ? c * kEnvChunk + kEnvChunk : cfgl.B;
      for (int64_t i = c * kEnvChunk; i < end; ++i) bl(fl, bkl, cfgl, i);
    }
  }
}

// errors[0]: index+1 of the first environment with an invalid action (0 if none);
// errors[1]: index+1 of the first finished environment stepped in DISABLED mode (0 if none).
// Nothing is stepped when either is nonzero, so a rejected call leaves every environment as it was.
template <typename Family>
void env_step_cpu(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, const int32_t* actions,
                  const StepOutputs<typename Family::obs_t>& out, int64_t* errors) {
  const int64_t B = cfg.B;
  errors[0] = 0;
  errors[1] = 0;
  // Validation, serial and branch-free (it vectorises: a few microseconds at B = 8192); the index
  // of the first offender is looked for only when there is one.
  const int64_t n = B * f.action_dim;
  const uint32_t limit = static_cast<uint32_t>(f.num_actions);
  uint32_t any_bad = 0;
  for (int64_t k = 0; k < n; ++k) any_bad |= static_cast<uint32_t>(static_cast<uint32_t>(actions[k]) >= limit);
  uint32_t any_finished = 0;
  if (cfg.autoreset == DISABLED) {
    for (int64_t i = 0; i < B; ++i) any_finished |= static_cast<uint32_t>(bk.status[i] == FINISHED);
  }
  if (any_bad || any_finished) {
    for (int64_t i = 0; i < B; ++i) {
      int64_t bad = 0, fin = 0;
      check_env(f, bk, i, actions + i * f.action_dim, &bad, &fin);
      if (bad && errors[0] == 0) errors[0] = i + 1;
      if (fin && errors[1] == 0) errors[1] = i + 1;
    }
    return;  // nothing is stepped: a rejected call leaves every environment as it was
  }
  const auto step = [actions, out](const Family& fl, const Bookkeeping& bkl, const DriverConfig& cfgl, int64_t i) {
    step_env(fl, bkl, cfgl, i, actions + i * fl.action_dim, out);
  };
  for_each_env(f, bk, cfg, step);
}

// Reset the environments with mask[i] != 0 (all when mask is null).
template <typename Family>
void env_reset_cpu(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, const uint8_t* mask,
                   bool new_trial, typename Family::obs_t* obs) {
  for_each_env(f, bk, cfg, [mask, new_trial, obs](const Family& fl, const Bookkeeping& bkl, const DriverConfig& cfgl,
                                                  int64_t i) {
    if (mask == nullptr || mask[i]) reset_env(fl, bkl, cfgl, i, new_trial, obs);
  });
}

// Write the current observation of every environment (no state change).
template <typename Family>
void env_observe_cpu(const Family& f, const Bookkeeping& bk, const DriverConfig& cfg, typename Family::obs_t* obs) {
  for_each_env(f, bk, cfg, [obs](const Family& fl, const Bookkeeping& bkl, const DriverConfig&, int64_t i) {
    write_obs(fl, bkl, i, obs);
  });
}

#endif  // __CUDACC__

}  // namespace envs
}  // namespace metakern
