// Harlow task (MetODS, Chalvidal et al. 2022; Harlow 1949's "learning set"): two objects, each a
// scalar value, one rewarded (+reward) and one punished (-reward), shown `presentations` times on a
// line of `width` cells at randomly permuted positions, with `fixation_steps` fixation steps before
// every choice. A memoryless policy earns 0 in expectation; one that remembers the first outcome
// earns (presentations - 1) * reward.
//
// Time: t counts the steps of the episode; step t is a choice step when t % period == fixation_steps
// (period = fixation_steps + 1), else a fixation step. The episode terminates after the last choice
// step (t = length = presentations * period).
// Observation (float32 [1 + width]): fixation step (and the terminal observation): [1, 0, ..., 0];
// choice step: [0, line] with line[pa] = value of the rewarded object, line[pb] = value of the other,
// 0 elsewhere.
// Placements: (pa, pb) is uniform over the width * (width - 1) ordered pairs of distinct cells:
// pa = rng_below(rng, width) from the top 32 bits, q = rng_below(rng << 32, width - 1) from the low
// 32 bits, pb = q + (q >= pa). Reset draws the placement of the first presentation; the step that
// enters the choice step of a later presentation draws its placement from its own rng.
// Rewards: fixation step 0; choice step: +reward at pa, -reward at pb, empty_reward elsewhere (float32
// constants: no arithmetic, so every backend returns the same bits).
// The numpy reference is metakern/envs/harlow.py.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "envs/env_driver.h"

namespace metakern {
namespace envs {

struct Harlow {
  using obs_t = float;
  int64_t obs_size = 3;
  int32_t action_dim = 1, reward_dim = 1, num_actions = 2;
  int32_t width = 2;           // line cells (= actions)
  int32_t fixation = 1;        // fixation steps before each choice step
  int32_t period = 2;          // fixation + 1
  int32_t length = 10;         // presentations * period: the episode length
  float reward = 1.0f, penalty = -1.0f, empty_reward = 0.0f;
  int32_t* t = nullptr;           // [B] step within the episode
  int32_t* pa = nullptr;          // [B] cell of the rewarded object (current / last presentation)
  int32_t* pb = nullptr;          // [B] cell of the other object
  const float* values = nullptr;  // [P, 2] tasks: (value of the rewarded object, value of the other)

  static Harlow from_args(const std::vector<std::uintptr_t>& p, const std::vector<int64_t>& i,
                          const std::vector<double>& f) {
    if (p.size() != 4 || i.size() != 3 || f.size() != 2) {
      throw std::invalid_argument("Harlow: expects 4 pointers, 3 ints and 2 floats");
    }
    for (auto ptr : p) {
      if (ptr == 0) throw std::invalid_argument("Harlow: null pointer");
    }
    Harlow h;
    h.t = reinterpret_cast<int32_t*>(p[0]);
    h.pa = reinterpret_cast<int32_t*>(p[1]);
    h.pb = reinterpret_cast<int32_t*>(p[2]);
    h.values = reinterpret_cast<const float*>(p[3]);
    const int64_t width = i[0], presentations = i[1], fixation = i[2];
    if (width < 2 || width >= (1 << 20) || presentations < 1 || fixation < 0 ||
        presentations * (fixation + 1) >= (int64_t{1} << 31)) {
      throw std::invalid_argument("Harlow: invalid width, presentations or fixation_steps");
    }
    h.width = static_cast<int32_t>(width);
    h.num_actions = h.width;
    h.obs_size = 1 + width;
    h.fixation = static_cast<int32_t>(fixation);
    h.period = h.fixation + 1;
    h.length = static_cast<int32_t>(presentations) * h.period;
    h.reward = static_cast<float>(f[0]);
    h.penalty = -h.reward;
    h.empty_reward = static_cast<float>(f[1]);
    return h;
  }

  MK_HD void place(int64_t i, uint64_t rng) const {
    const int32_t a = static_cast<int32_t>(rng_below(rng, static_cast<uint32_t>(width)));
    const int32_t q = static_cast<int32_t>(rng_below(rng << 32, static_cast<uint32_t>(width - 1)));
    pa[i] = a;
    pb[i] = q + (q >= a);
  }

  MK_HD void reset(int64_t i, int32_t, uint64_t rng) const {
    t[i] = 0;
    place(i, rng);
  }

  MK_HD bool step(int64_t i, int32_t, const int32_t* a, float* r, uint64_t rng) const {
    const int32_t now = t[i];
    const int32_t phase = now % period;
    const int32_t act = a[0];
    float rew = 0.0f;
    if (phase == fixation) rew = act == pa[i] ? reward : (act == pb[i] ? penalty : empty_reward);
    r[0] = rew;
    const int32_t next = now + 1;
    t[i] = next;
    if (next >= length) return true;
    // entering the choice step of a later presentation (the first one's placement came from reset)
    const int32_t next_phase = phase + 1 == period ? 0 : phase + 1;
    if (next_phase == fixation && next >= period) place(i, rng);
    return false;
  }

  MK_HD void observe(int64_t i, int32_t task, float* out, const EnvCtx&) const {
    const int32_t now = t[i];
    const bool choice = now < length && now % period == fixation;
    out[0] = choice ? 0.0f : 1.0f;
    for (int32_t k = 0; k < width; ++k) out[1 + k] = 0.0f;
    if (choice) {
      out[1 + pa[i]] = values[2 * static_cast<int64_t>(task)];
      out[1 + pb[i]] = values[2 * static_cast<int64_t>(task) + 1];
    }
  }
};

}  // namespace envs
}  // namespace metakern
