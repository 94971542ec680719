// Tabular MDPs (RL^2, Duan et al. 2016; pytorch-maml-rl's TabularMDPEnv): S states, A actions, a
// random MDP per task. The episode starts in state 0 (or a uniform state); an action a in state s
// pays R[s, a] + noise and moves to s' ~ P[s, a, :]; the episode never terminates (the driver's
// time limit ends it). Observation: one-hot of the state (float32 [S]) or the state index ([1]).
//
// All randomness of a step comes from its 64-bit `rng`, split into independent bit fields:
//   bits 40..63 -> u = rng_unit(rng), the next state by inverse CDF: s' = #{j < S-1 : cdf[j] <= u};
//   bits  0..15 -> the noise atom noise[rng & 0xFFFF] (a 2^16-entry float32 table, see tabular.py).
// The task pool stores the per-task float32 CDF (cdf[S-1] = 1 exactly, so the count never exceeds
// S-1 and zero-probability states are never drawn) and the float32 reward means; the noise table is
// pre-scaled by the noise std. A step is one load of R, one of the table, S-1 compares and one add,
// with no float product anywhere, so no backend can contract it into an FMA: C++, CUDA and the numpy
// reference agree bit for bit. Cost per step: O(S) compares; memory: 4 S^2 A bytes per task.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "envs/env_driver.h"

namespace metakern {
namespace envs {

struct TabularMDP {
  using obs_t = float;
  static constexpr uint64_t kNoiseMask = 0xFFFF;  // noise table size - 1
  int64_t obs_size = 1;
  int32_t action_dim = 1, reward_dim = 1, num_actions = 1;
  int32_t S = 1;              // number of states
  int32_t uniform_start = 0;  // reset to a uniform state instead of state 0
  int32_t one_hot = 1;        // observation: one-hot [S] (1) or the index [1] (0)
  int32_t noisy = 1;          // add the noise table's atom to the mean reward
  int32_t* state = nullptr;            // [B] current state
  const float* cdf = nullptr;          // [P, S, A, S] cumulative transition probabilities
  const float* reward_mean = nullptr;  // [P, S, A]
  const float* noise = nullptr;        // [kNoiseMask + 1] noise atoms (already times the std)

  static TabularMDP from_args(const std::vector<std::uintptr_t>& p, const std::vector<int64_t>& i,
                              const std::vector<double>&) {
    if (p.size() != 4 || i.size() != 5) throw std::invalid_argument("TabularMDP: expects 4 pointers and 5 ints");
    for (auto ptr : p) {
      if (ptr == 0) throw std::invalid_argument("TabularMDP: null pointer");
    }
    TabularMDP f;
    f.state = reinterpret_cast<int32_t*>(p[0]);
    f.cdf = reinterpret_cast<const float*>(p[1]);
    f.reward_mean = reinterpret_cast<const float*>(p[2]);
    f.noise = reinterpret_cast<const float*>(p[3]);
    f.S = static_cast<int32_t>(i[0]);
    f.num_actions = static_cast<int32_t>(i[1]);
    f.uniform_start = static_cast<int32_t>(i[2]);
    f.one_hot = static_cast<int32_t>(i[3]);
    f.noisy = static_cast<int32_t>(i[4]);
    if (f.S < 1 || f.num_actions < 1) throw std::invalid_argument("TabularMDP: S and A must be positive");
    f.obs_size = f.one_hot ? f.S : 1;
    return f;
  }

  MK_HD void reset(int64_t i, int32_t, uint64_t rng) const {
    state[i] = uniform_start ? static_cast<int32_t>(rng_below(rng, static_cast<uint32_t>(S))) : 0;
  }

  MK_HD bool step(int64_t i, int32_t task, const int32_t* a, float* r, uint64_t rng) const {
    const int64_t sa = (static_cast<int64_t>(task) * S + state[i]) * num_actions + a[0];
    float rew = reward_mean[sa];
    if (noisy) rew += noise[rng & kNoiseMask];
    r[0] = rew;
    const float u = rng_unit(rng);
    const float* c = cdf + sa * S;
    int32_t next = 0;
    for (int32_t j = 0; j < S - 1; ++j) next += c[j] <= u;
    state[i] = next;
    return false;
  }

  MK_HD void observe(int64_t i, int32_t, float* out, const EnvCtx&) const {
    const int32_t s = state[i];
    if (!one_hot) {
      out[0] = static_cast<float>(s);
      return;
    }
    for (int32_t j = 0; j < S; ++j) out[j] = j == s ? 1.0f : 0.0f;
  }
};

}  // namespace envs
}  // namespace metakern
