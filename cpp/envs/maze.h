// E-MAML mazes (Stadie et al. 2018; geyang/e-maml maze_env.py): reach the goal square of a perfect
// maze. A maze is an S x S wall grid with an all-wall border, so moves need no bounds check.
// Positions are flat indices row * S + col. Four actions, the reference's (row, col) moves:
// 0 = (0, +1), 1 = (0, -1), 2 = (+1, 0), 3 = (-1, 0); a move into a wall stays and counts a hit.
// Reward: one of four float32 values goal_reward * at_goal - wall_penalty * hit - step_cost,
// computed once in Python (maze.reward_table; E-MAML: goal_reward = 1 + c, wall_penalty = 1e-3,
// step_cost = c = 1 / horizon). Without respawn the episode terminates on the goal. With respawn (the
// MetODS maze) it does not: the agent is moved to a uniformly random free square other than the
// goal, drawn from the step's 64 random bits, and the episode runs until the time limit. Observation
// (float32, 15): new_episode, prev_reward, one-hot prev_action (4), the 3x3 walls around the agent
// in row-major order (9).
// Per-environment state: pos (int32). Task pool: maze, start, goal (int32 [T]); the wall grids are
// read through the task's maze id as neighbour codes (uint8 [M, S * S]; bit k of a square = wall bit
// of its k-th neighbour in row-major order, the 3x3 patch without its centre), so a step reads one
// byte for the move and one for the observation (one cache line, in a pool that random batches
// spread over). The numpy reference (metakern/envs/maze.py) reads the plain wall grids.
// Respawn reads the free-square table (int32 [M, stride]: the free squares of maze m in increasing
// order, padded) and the free-square counts (int32 [M]); k = rng_below(bits, F - 1) picks free[k],
// replaced by free[F - 1] when free[k] is the goal: uniform over the F - 1 other free squares.
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
  int32_t respawn = 0;                  // 1: the goal re-places the agent instead of terminating
  int64_t free_stride = 0;              // row length of free_cells (>= every maze's count)
  const int32_t* free_cells = nullptr;  // [M, free_stride] free squares of each maze (respawn only)
  const int32_t* num_free = nullptr;    // [M] free squares of each maze (respawn only)

  static Maze from_args(const std::vector<std::uintptr_t>& p, const std::vector<int64_t>& i,
                        const std::vector<double>& f) {
    if (p.size() != 7 || i.size() != 3 || f.size() != 4) {
      throw std::invalid_argument("Maze: expects 7 pointers, 3 ints and 4 floats");
    }
    if (i[0] < 3 || i[0] > 46340) throw std::invalid_argument("Maze: invalid grid side");
    if (i[1] != 0 && i[1] != 1) throw std::invalid_argument("Maze: respawn must be 0 or 1");
    if (i[1] && (i[2] < 2 || i[2] > i[0] * i[0] || p[5] == 0 || p[6] == 0)) {
      throw std::invalid_argument("Maze: respawn needs the free-square tables (>= 2 free squares per maze)");
    }
    Maze m;
    m.pos = reinterpret_cast<int32_t*>(p[0]);
    m.maze = reinterpret_cast<const int32_t*>(p[1]);
    m.start = reinterpret_cast<const int32_t*>(p[2]);
    m.goal = reinterpret_cast<const int32_t*>(p[3]);
    m.codes = reinterpret_cast<const uint8_t*>(p[4]);
    m.free_cells = reinterpret_cast<const int32_t*>(p[5]);
    m.num_free = reinterpret_cast<const int32_t*>(p[6]);
    m.size = static_cast<int32_t>(i[0]);
    m.area = static_cast<int64_t>(m.size) * m.size;
    m.respawn = static_cast<int32_t>(i[1]);
    m.free_stride = i[2];
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

  // A uniformly random free square of maze m other than the goal g (count F >= 2).
  MK_HD int32_t respawn_square(int32_t m, int32_t g, uint64_t bits) const {
    const int32_t* row = free_cells + static_cast<int64_t>(m) * free_stride;
    const int32_t n = num_free[m];
    const int32_t cell = row[rng_below(bits, static_cast<uint32_t>(n - 1))];
    return cell == g ? row[n - 1] : cell;
  }

  MK_HD bool step(int64_t i, int32_t task, const int32_t* a, float* r, uint64_t bits) const {
    const int32_t act = a[0];
    const int32_t p = pos[i];
    const int32_t m = maze[task];
    const uint32_t code = codes[static_cast<int64_t>(m) * area + p];
    // code bit of the neighbour the action moves to: (0, +1) -> 4, (0, -1) -> 3, (+1, 0) -> 6, (-1, 0) -> 1
    const uint32_t bit = (0x01060304u >> (8 * act)) & 0xFFu;
    const int32_t hit = static_cast<int32_t>((code >> bit) & 1u);
    const int32_t q = p + (move_delta(act) & (hit - 1));  // stays on a hit, without a branch
    const int32_t g = goal[task];
    const int32_t at_goal = q == g;
    // the goal is rare under any policy, so this branch is well predicted (and off without respawn)
    pos[i] = (respawn & at_goal) ? respawn_square(m, g, bits) : q;
    r[0] = reward(at_goal, hit);
    return (at_goal & (respawn ^ 1)) != 0;
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
