// Iterated Prisoner's Dilemma (LOLA / LOLA-DiCE): two agents, two actions each, memory-one state.
// The conventions are those of the LOLA-DiCE code (alexis-jacq/LOLA_DiCE, Theoretical-GMRL lola/):
//   reward of agent k = payoff[a_k, a_other] (row = own action), default [[-2, 0], [-3, -1]], so
//   action 0 is "defect" and action 1 "cooperate" in game terms (mutual 0 pays -2, mutual 1 pays -1);
//   state 0 = start, then 1 + 2 a_1 + a_2 (agent 1's view); agent 2 sees 1 + 2 a_2 + a_1, i.e. the
//   same id with 2 and 3 swapped. The episode never terminates (the driver's time limit ends it).
// Observation per environment, float32: one-hot of both agents' states [2, 5], or the ids [2].
// A task is one payoff matrix (float32 [2, 2]); a step is two loads and an integer update.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "envs/env_driver.h"

namespace metakern {
namespace envs {

struct IteratedPD {
  using obs_t = float;
  int64_t obs_size = 10;
  int32_t action_dim = 2, reward_dim = 2, num_actions = 2;
  int32_t one_hot = 1;           // observation: one-hot [2, 5] (1) or the two state ids [2] (0)
  int32_t* state = nullptr;      // [B] joint state in agent 1's view (0 .. 4)
  const float* payoff = nullptr; // [P, 2, 2] payoff[own action, other's action]

  static IteratedPD from_args(const std::vector<std::uintptr_t>& p, const std::vector<int64_t>& i,
                              const std::vector<double>&) {
    if (p.size() != 2 || i.size() != 1) throw std::invalid_argument("IteratedPD: expects 2 pointers and 1 int");
    if (p[0] == 0 || p[1] == 0) throw std::invalid_argument("IteratedPD: null pointer");
    IteratedPD f;
    f.state = reinterpret_cast<int32_t*>(p[0]);
    f.payoff = reinterpret_cast<const float*>(p[1]);
    f.one_hot = static_cast<int32_t>(i[0]);
    f.obs_size = f.one_hot ? 10 : 2;
    return f;
  }

  MK_HD void reset(int64_t i, int32_t, uint64_t) const { state[i] = 0; }

  MK_HD bool step(int64_t i, int32_t task, const int32_t* a, float* r, uint64_t) const {
    const int32_t a1 = a[0], a2 = a[1];
    const float* p = payoff + 4 * static_cast<int64_t>(task);
    r[0] = p[2 * a1 + a2];
    r[1] = p[2 * a2 + a1];
    state[i] = 1 + 2 * a1 + a2;
    return false;
  }

  MK_HD void observe(int64_t i, int32_t, float* out, const EnvCtx&) const {
    const int32_t s1 = state[i];
    const int32_t s2 = (s1 == 2 || s1 == 3) ? 5 - s1 : s1;  // agent 2's view: CD <-> DC
    if (!one_hot) {
      out[0] = static_cast<float>(s1);
      out[1] = static_cast<float>(s2);
      return;
    }
    for (int32_t j = 0; j < 5; ++j) {
      out[j] = j == s1 ? 1.0f : 0.0f;
      out[5 + j] = j == s2 ? 1.0f : 0.0f;
    }
  }
};

}  // namespace envs
}  // namespace metakern
