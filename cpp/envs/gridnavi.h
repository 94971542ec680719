// GridNavi (VariBAD / LDM): an N x N grid, start at (0, 0), a hidden goal cell per task. Five
// actions: 0 stay, 1 up (y+1), 2 right (x+1), 3 down (y-1), 4 left (x-1); moves off the grid stay.
// Reward +1 when the agent is on the goal after the move, else -0.1; the episode never terminates
// (the time limit ends it). Observation: the agent's (x, y) as float32.
// The numpy reference is metakern/envs/gridnavi.py; this header is the worked example of the
// family interface of env_driver.h.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "envs/env_driver.h"

namespace metakern {
namespace envs {

struct GridNavi {
  using obs_t = float;
  int64_t obs_size = 2;
  int32_t action_dim = 1, reward_dim = 1, num_actions = 5;
  int32_t n = 0;                   // grid side
  int32_t* pos = nullptr;          // [B, 2] state: agent (x, y)
  const int32_t* goals = nullptr;  // [P, 2] tasks: goal (x, y)

  static GridNavi from_args(const std::vector<std::uintptr_t>& p, const std::vector<int64_t>& i,
                            const std::vector<double>&) {
    if (p.size() != 2 || i.size() != 1) throw std::invalid_argument("GridNavi: expects 2 pointers and 1 int");
    GridNavi f;
    f.pos = reinterpret_cast<int32_t*>(p[0]);
    f.goals = reinterpret_cast<const int32_t*>(p[1]);
    f.n = static_cast<int32_t>(i[0]);
    return f;
  }

  MK_HD void reset(int64_t i, int32_t, uint64_t) const {
    pos[2 * i] = 0;
    pos[2 * i + 1] = 0;
  }

  MK_HD bool step(int64_t i, int32_t task, const int32_t* a, float* r, uint64_t) const {
    int32_t x = pos[2 * i], y = pos[2 * i + 1];
    const int32_t act = a[0];
    const int32_t nx = x + (act == 2) - (act == 4);
    const int32_t ny = y + (act == 1) - (act == 3);
    if (nx >= 0 && nx < n) x = nx;
    if (ny >= 0 && ny < n) y = ny;
    pos[2 * i] = x;
    pos[2 * i + 1] = y;
    r[0] = (x == goals[2 * task] && y == goals[2 * task + 1]) ? 1.0f : -0.1f;
    return false;
  }

  MK_HD void observe(int64_t i, int32_t, float* out, const EnvCtx&) const {
    out[0] = static_cast<float>(pos[2 * i]);
    out[1] = static_cast<float>(pos[2 * i + 1]);
  }
};

}  // namespace envs
}  // namespace metakern
