// E-MAML mazes (Stadie et al. 2018; geyang/e-maml maze_env.py): reach the goal square of a perfect
// maze. A maze is an S x S wall grid with an all-wall border, so moves need no bounds check.
// Positions are flat indices row * S + col. Four actions, the reference's (row, col) moves:
// 0 = (0, +1), 1 = (0, -1), 2 = (+1, 0), 3 = (-1, 0); a move into a wall stays and counts a hit.
// Reward: one of the four float32 values (1 + c) * at_goal - 1e-3 * hit - c, c = 1 / horizon,
// computed once in Python (maze.reward_table); the episode terminates on the goal. Observation
// (float32, 15): new_episode, prev_reward, one-hot prev_action (4), the 3x3 walls around the agent
// in row-major order (9).
// Per-environment state: pos (int32). Task pool: maze, start, goal (int32 [T]); the wall grids are
// read through the task's maze id as neighbour codes (uint8 [M, S * S]; bit k of a square = wall bit
// of its k-th neighbour in row-major order, the 3x3 patch without its centre), so a step reads one
// byte for the move and one for the observation (one cache line, in a pool that random batches
// spread over). The numpy reference (metakern/envs/maze.py) reads the plain wall grids.
// Hot path: no division, no branch on data (a wall hit is a coin flip under random actions): the
// host uses small lookup tables, the device selects (a dynamically indexed member of a kernel
// argument would go to local memory).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "envs/env_driver.h"

namespace metakern {
namespace envs {

struct Maze {
  using obs_t = float;
  int64_t obs_size = 15;
  int32_t action_dim = 1, reward_dim = 1, num_actions = 4;
  int32_t size = 0;                     // side S of the wall grid
  int64_t area = 0;                     // S * S
  float rewards[4] = {};                // [2 * at_goal + hit] (a hit on the goal only if start == goal)
  int32_t delta[4] = {};                // flat offset of each action: +1, -1, +S, -S
  int32_t* pos = nullptr;               // [B] state: agent square
  const int32_t* maze = nullptr;        // [T] tasks: maze id
  const int32_t* start = nullptr;       // [T] start square
  const int32_t* goal = nullptr;        // [T] goal square
  const uint8_t* codes = nullptr;       // [M, S * S] neighbour codes

  static Maze from_args(const std::vector<std::uintptr_t>& p, const std::vector<int64_t>& i,
                        const std::vector<double>& f) {
    if (p.size() != 5 || i.size() != 1 || f.size() != 4) {
      throw std::invalid_argument("Maze: expects 5 pointers, 1 int and 4 floats");
    }
    if (i[0] < 3 || i[0] > 46340) throw std::invalid_argument("Maze: invalid grid side");
    Maze m;
    m.pos = reinterpret_cast<int32_t*>(p[0]);
    m.maze = reinterpret_cast<const int32_t*>(p[1]);
    m.start = reinterpret_cast<const int32_t*>(p[2]);
    m.goal = reinterpret_cast<const int32_t*>(p[3]);
    m.codes = reinterpret_cast<const uint8_t*>(p[4]);
    m.size = static_cast<int32_t>(i[0]);
    m.area = static_cast<int64_t>(m.size) * m.size;
    for (int k = 0; k < 4; ++k) m.rewards[k] = static_cast<float>(f[k]);
    m.delta[0] = 1;
    m.delta[1] = -1;
    m.delta[2] = m.size;
    m.delta[3] = -m.size;
    return m;
  }

  // Host: small lookup tables (no branch on random data); device: selects, because a dynamically
  // indexed member of a kernel argument would be copied to local memory.
  MK_HD int32_t move_delta(int32_t act) const {
#ifdef __CUDA_ARCH__
    const int32_t along = (act & 2) ? size : 1;
    return (act & 1) ? -along : along;
#else
    return delta[act];
#endif
  }

  MK_HD float reward(int32_t at_goal, int32_t hit) const {
#ifdef __CUDA_ARCH__
    return at_goal ? (hit ? rewards[3] : rewards[2]) : (hit ? rewards[1] : rewards[0]);
#else
    return rewards[2 * at_goal + hit];
#endif
  }

  MK_HD void reset(int64_t i, int32_t task, uint64_t) const { pos[i] = start[task]; }

  MK_HD bool step(int64_t i, int32_t task, const int32_t* a, float* r, uint64_t) const {
    const int32_t act = a[0];
    const int32_t p = pos[i];
    const uint32_t code = codes[static_cast<int64_t>(maze[task]) * area + p];
    // code bit of the neighbour the action moves to: (0, +1) -> 4, (0, -1) -> 3, (+1, 0) -> 6, (-1, 0) -> 1
    const uint32_t bit = (0x01060304u >> (8 * act)) & 0xFFu;
    const int32_t hit = static_cast<int32_t>((code >> bit) & 1u);
    const int32_t q = p + (move_delta(act) & (hit - 1));  // stays on a hit, without a branch
    pos[i] = q;
    const int32_t at_goal = q == goal[task];
    r[0] = reward(at_goal, hit);
    return at_goal != 0;
  }

  MK_HD void observe(int64_t i, int32_t task, float* out, const EnvCtx& ctx) const {
    const uint32_t code = codes[static_cast<int64_t>(maze[task]) * area + pos[i]];
    out[0] = static_cast<float>(ctx.new_episode);
    out[1] = ctx.prev_reward;
    for (int32_t k = 0; k < 4; ++k) out[2 + k] = ctx.prev_action == k ? 1.0f : 0.0f;
    out[10] = 0.0f;  // the centre: the agent's own square is never a wall
    for (int32_t k = 0; k < 4; ++k) out[6 + k] = static_cast<float>((code >> k) & 1u);
    for (int32_t k = 4; k < 8; ++k) out[7 + k] = static_cast<float>((code >> k) & 1u);
  }
};

}  // namespace envs
}  // namespace metakern
