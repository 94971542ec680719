// Krazy World (krazyworld 2.0 rules, legacy walls / key / door and multi-cell dynamics as options).
// The rules, the task pool and the `legacy_quirks` switch are documented in metakern/envs/krazy.py,
// whose numpy reference (`ref_reset` / `ref_step` / `ref_observe`) this kernel matches exactly.
//
// Layout, chosen for speed (about 25 ns per env-step on one Zen 4 core, 10x10 local view):
//  * per env: a uint8 copy of the board, padded with `pad` cells of holes on every side (pad = the
//    longest move of the task's controls), so a move needs no bounds check: the destination is legal
//    iff its tile is passable; and int32 agent = (row, col, energy, has_key). Reset is a memcpy of
//    the pool's padded board.
//  * local observations write the N*N blanked array, then the 3x3 neighbourhood with clamped
//    coordinates (an off-board neighbour clamps onto a visible cell and rewrites its value), so the
//    write needs no branches.
//  * the ice slide is a loop bounded by N.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "envs/env_driver.h"

#if defined(__CUDACC__)
#define KRAZY_COLD MK_HD
#elif defined(__GNUC__)
#define KRAZY_COLD __attribute__((noinline, cold))
#else
#define KRAZY_COLD
#endif

namespace metakern {
namespace envs {

struct Krazy {
  enum Tile : uint8_t {
    HOLE = 0,
    NORMAL = 1,
    GOAL = 2,
    AGENT = 3,
    TRANSPORTER = 4,
    DOOR = 5,
    KEY = 6,
    DEATH = 7,
    ICE = 8,
    ENERGY = 9,
    UNSEEN = 10
  };
  enum View : int32_t { LOCAL = 0, FULL = 1, PATCH = 2 };
  enum Mode : int32_t { IDS = 0, ONEHOT = 1, IMAGE = 2 };

  using obs_t = uint8_t;
  int64_t obs_size = 0;
  int32_t action_dim = 1, reward_dim = 1, num_actions = 4;
  int32_t n = 0, pad = 1, pn = 0, bsize = 0;  // side, border, padded side, padded board bytes
  int32_t view = LOCAL, mode = IDS, quirks = 0, dense = 0, num_goals = 0, num_tele = 0;
  int32_t energy_init = 0, replenish = 0, use_lut = 0, unseen = 0;
  uint8_t* board = nullptr;          // [B, pn*pn] state: the board being played
  int32_t* agent = nullptr;          // [B, 4] state: row, col, energy, has_key
  const uint8_t* pboard = nullptr;   // [P, pn*pn] pool: padded boards
  const int32_t* start = nullptr;    // [P, 2]
  const int32_t* goals = nullptr;    // [P, max(1, G), 2]
  const int32_t* tele = nullptr;     // [P, max(1, T), 4] transporter pairs (r1, c1, r2, c2)
  const uint8_t* lut = nullptr;      // [P, 16] tile id -> observed id (or palette slot for images)
  const int32_t* moves = nullptr;    // [P, 4 * 2] (d_row, d_col) of each action

  static Krazy from_args(const std::vector<std::uintptr_t>& p, const std::vector<int64_t>& i,
                         const std::vector<double>&) {
    if (p.size() != 8 || i.size() != 12) throw std::invalid_argument("Krazy: expects 8 pointers and 12 ints");
    Krazy f;
    f.board = reinterpret_cast<uint8_t*>(p[0]);
    f.agent = reinterpret_cast<int32_t*>(p[1]);
    f.pboard = reinterpret_cast<const uint8_t*>(p[2]);
    f.start = reinterpret_cast<const int32_t*>(p[3]);
    f.goals = reinterpret_cast<const int32_t*>(p[4]);
    f.tele = reinterpret_cast<const int32_t*>(p[5]);
    f.lut = reinterpret_cast<const uint8_t*>(p[6]);
    f.moves = reinterpret_cast<const int32_t*>(p[7]);
    f.n = static_cast<int32_t>(i[0]);
    f.pad = static_cast<int32_t>(i[1]);
    f.view = static_cast<int32_t>(i[2]);
    f.mode = static_cast<int32_t>(i[3]);
    f.quirks = static_cast<int32_t>(i[4]);
    f.dense = static_cast<int32_t>(i[5]);
    f.num_goals = static_cast<int32_t>(i[6]);
    f.num_tele = static_cast<int32_t>(i[7]);
    f.energy_init = static_cast<int32_t>(i[8]);
    f.replenish = static_cast<int32_t>(i[9]);
    f.use_lut = static_cast<int32_t>(i[10]);
    f.unseen = static_cast<int32_t>(i[11]);
    if (f.n < 3 || f.n > 64 || f.pad < 1 || f.pad > 3 || f.view < 0 || f.view > 2 || f.mode < 0 || f.mode > 2) {
      throw std::invalid_argument("Krazy: invalid configuration");
    }
    f.pn = f.n + 2 * f.pad;
    f.bsize = f.pn * f.pn;
    const int64_t n2 = static_cast<int64_t>(f.n) * f.n;
    const int64_t cells = f.view == PATCH ? 9 : n2;
    f.obs_size = f.mode == IDS ? cells : (f.mode == ONEHOT ? 10 * cells : 3 * cells);
    return f;
  }

  // RGB of a palette slot (0..9: the 2.0 colours; 10: black, 11: grey for blanked cells).
  MK_HD static uint32_t palette(int32_t slot) {
    switch (slot) {
      case 1: return 0xFFFFFFu;  // white
      case 2: return 0xFFDF00u;  // gold
      case 3: return 0x0000FFu;  // blue
      case 4: return 0xFF8C00u;  // orange
      case 5: return 0xC0C0C0u;  // silver
      case 6: return 0xFF00FFu;  // magenta
      case 7: return 0xFF0000u;  // red
      case 8: return 0x4B0082u;  // purple
      case 9: return 0x00FF00u;  // green
      case 11: return 0x808080u;  // grey
      default: return 0x000000u;  // black (0, 10)
    }
  }

  MK_HD static bool passable(uint8_t tile, int32_t key) { return tile != HOLE && (tile != DOOR || key != 0); }

  MK_HD int32_t goal_dist(int32_t task, int32_t r, int32_t c) const {
    const int32_t* g = goals + static_cast<int64_t>(task) * (num_goals > 0 ? num_goals : 1) * 2;
    int32_t s = 0;
    for (int32_t k = 0; k < num_goals; ++k) {
      const int32_t a = g[2 * k] - r, b = g[2 * k + 1] - c;
      s += (a < 0 ? -a : a) + (b < 0 ? -b : b);
    }
    return s;
  }

  MK_HD void reset(int64_t i, int32_t task, uint64_t) const {
    memcpy(board + i * bsize, pboard + static_cast<int64_t>(task) * bsize, static_cast<size_t>(bsize));
    int32_t* ag = agent + 4 * i;
    ag[0] = start[2 * task];
    ag[1] = start[2 * task + 1];
    ag[2] = energy_init;
    ag[3] = 0;
  }

  // The tile under the agent acts (2.0's check_dead / check_at_goal / check_at_energy /
  // check_at_transporter, plus the legacy key).
  MK_HD void act(uint8_t* b, int32_t task, int32_t& p, int32_t& r, int32_t& c, int32_t& e, int32_t& key,
                 int32_t& got, bool& dead) const {
    const uint8_t t = b[p];
    if (t == NORMAL || t == ICE) return;
    if (t == DEATH) {
      dead = true;
    } else if (t == GOAL) {
      b[p] = NORMAL;
      got += 1;
    } else if (t == ENERGY) {
      b[p] = NORMAL;
      e += replenish;
    } else if (t == KEY) {
      b[p] = NORMAL;
      key = 1;
    } else if (t == TRANSPORTER) {
      const int32_t* tp = tele + static_cast<int64_t>(task) * (num_tele > 0 ? num_tele : 1) * 4;
      int32_t nr = r, nc = c;
      for (int32_t k = 0; k < num_tele; ++k) {  // the last matching pair wins, as in 2.0
        const int32_t* q = tp + 4 * k;
        if (r == q[0] && c == q[1]) {
          nr = q[2];
          nc = q[3];
        } else if (r == q[2] && c == q[3]) {
          nr = q[0];
          nc = q[1];
        }
      }
      r = nr;
      c = nc;
      p = (r + pad) * pn + c + pad;
    }
  }

  MK_HD bool step(int64_t i, int32_t task, const int32_t* a, float* reward, uint64_t) const {
    const int32_t ppn = pn, pp = pad;  // locals: the uint8 board stores may alias the members
    uint8_t* b = board + i * bsize;
    int32_t* ag = agent + 4 * i;
    int32_t r = ag[0], c = ag[1], e = ag[2] - 1, key = ag[3];
    const int32_t r0 = r, c0 = c;
    const int32_t* mv = moves + static_cast<int64_t>(task) * 8 + 2 * a[0];
    const int32_t dr = mv[0], dc = mv[1];
    const int32_t d = dr * ppn + dc;
    int32_t p = (r + pp) * ppn + c + pp;
    int32_t got = 0;
    bool dead = false;
    if (passable(b[p + d], key)) {
      p += d;
      r += dr;
      c += dc;
    }
    if (b[p] != NORMAL) {  // the tile acts (rarely anything but a normal tile)
      act(b, task, p, r, c, e, key, got, dead);
      if (b[p] == ICE && d != 0) {
        const int32_t nn = n, cost = quirks;
        for (int32_t k = 0; k < nn; ++k) {  // the slide never revisits a cell: at most N moves
          if (b[p] != ICE || !passable(b[p + d], key)) break;
          e -= cost;  // 2.0 charges one energy per slid cell
          p += d;
          r += dr;
          c += dc;
          act(b, task, p, r, c, e, key, got, dead);
        }
      }
    }
    ag[0] = r;
    ag[1] = c;
    ag[2] = e;
    ag[3] = key;
    if (dense) {
      reward[0] = static_cast<float>(goal_dist(task, r0, c0) - goal_dist(task, r, c) + 3 * got);
    } else {
      reward[0] = static_cast<float>(got);
    }
    return dead || e < 1;
  }

  // Observed value of cell (rr, cc): the agent's id on its cell, else the tile; through the lut.
  MK_HD uint8_t cell(const uint8_t* b, const uint8_t* lt, int32_t rr, int32_t cc, int32_t r, int32_t c) const {
    const uint8_t v = (rr == r && cc == c) ? static_cast<uint8_t>(AGENT) : b[(rr + pad) * pn + cc + pad];
    return use_lut ? lt[v] : v;
  }

  MK_HD void put(uint8_t* out, int32_t k, uint8_t v) const {
    if (mode == IDS) {
      out[k] = v;
    } else if (mode == ONEHOT) {
      out[10 * k + v] = 1;
    } else {
      const uint32_t rgb = palette(v);
      out[3 * k] = static_cast<uint8_t>(rgb >> 16);
      out[3 * k + 1] = static_cast<uint8_t>(rgb >> 8);
      out[3 * k + 2] = static_cast<uint8_t>(rgb);
    }
  }

  // out[0 .. len) = v with 8-byte stores, inline: a call to memset would make the compiler spill
  // the registers of the whole step around it.
  MK_HD_INLINE static void fill(uint8_t* out, uint8_t v, int32_t len) {
#if !defined(__CUDA_ARCH__)
    if (len == 100) {  // the default 10x10 board: a constant size, which the compiler writes inline in 7 stores
      memset(out, v, 100);
      return;
    }
#endif
    const uint64_t w = static_cast<uint64_t>(v) * 0x0101010101010101ULL;
    int32_t k = 0;
    for (; k + 8 <= len; k += 8) memcpy(out + k, &w, 8);
    for (; k < len; ++k) out[k] = v;
  }

  // The hot path (local view, tile ids). Members are copied to locals first: the uint8 stores may
  // alias anything, and would otherwise force a reload of every member after each store.
  template <bool LUT>
  MK_HD_INLINE void local_ids(uint8_t* __restrict__ out, const uint8_t* __restrict__ b, const uint8_t* __restrict__ lt,
                              int32_t r, int32_t c, int32_t rlo, int32_t rhi, int32_t clo, int32_t chi) const {
    const int32_t nn = n, pp = pad, ppn = pn;
    const uint8_t blank = LUT ? lt[UNSEEN] : static_cast<uint8_t>(unseen);
    const uint8_t me = LUT ? lt[AGENT] : static_cast<uint8_t>(AGENT);
    fill(out, blank, nn * nn);
    const int32_t rs[3] = {rlo, r, rhi};
    for (int32_t u = 0; u < 3; ++u) {
      const uint8_t* brow = b + (rs[u] + pp) * ppn + pp;
      uint8_t* orow = out + rs[u] * nn;
      const uint8_t v0 = brow[clo], v1 = brow[c], v2 = brow[chi];
      orow[clo] = LUT ? lt[v0] : v0;
      orow[chi] = LUT ? lt[v2] : v2;
      orow[c] = LUT ? lt[v1] : v1;
    }
    out[r * nn + c] = me;
  }

  // The 3x3 patch around the agent as 9 tile ids (row-major; off-board cells read `unseen`). The
  // padded board makes every read in bounds; the off-board test only picks the value.
  template <bool LUT>
  MK_HD_INLINE void patch_ids(uint8_t* __restrict__ out, const uint8_t* __restrict__ b, const uint8_t* __restrict__ lt,
                              int32_t r, int32_t c) const {
    const int32_t nn = n, pp = pad, ppn = pn;
    const uint8_t blank = LUT ? lt[UNSEEN] : static_cast<uint8_t>(unseen);
    for (int32_t dr = -1; dr <= 1; ++dr) {
      const int32_t rr = r + dr;
      const bool row_in = static_cast<uint32_t>(rr) < static_cast<uint32_t>(nn);
      const uint8_t* brow = b + (rr + pp) * ppn + pp;
      for (int32_t dc = -1; dc <= 1; ++dc) {
        const int32_t cc = c + dc;
        const uint8_t v = brow[cc];
        const bool in = row_in && static_cast<uint32_t>(cc) < static_cast<uint32_t>(nn);
        out[3 * (dr + 1) + dc + 1] = in ? (LUT ? lt[v] : v) : blank;
      }
    }
    out[4] = LUT ? lt[AGENT] : static_cast<uint8_t>(AGENT);
  }

  // Every other observation (full view, one-hot, images): out of line on the CPU, so that the hot
  // path stays small enough to be inlined into the driver's step.
  KRAZY_COLD void observe_other(int64_t i, int32_t task, uint8_t* out) const {
    const uint8_t* b = board + i * bsize;
    const int32_t* ag = agent + 4 * i;
    const int32_t r = ag[0], c = ag[1];
    const uint8_t* lt = lut + 16 * static_cast<int64_t>(task);
    const int32_t n2 = n * n;
    if (view == PATCH) {  // one-hot or image patches (ids take the inline path)
      if (mode == ONEHOT) memset(out, 0, 90);
      const uint8_t blank = use_lut ? lt[UNSEEN] : static_cast<uint8_t>(unseen);
      for (int32_t k = 0; k < 9; ++k) {
        const int32_t rr = r + k / 3 - 1, cc = c + k % 3 - 1;
        if (rr >= 0 && rr < n && cc >= 0 && cc < n) {
          put(out, k, cell(b, lt, rr, cc, r, c));
        } else if (mode != ONEHOT) {
          put(out, k, blank);  // one-hot: an unseen cell is all zeros, as in the local view
        }
      }
      return;
    }
    if (view == FULL) {
      const int32_t nn = n, pp = pad, ppn = pn;
      if (mode == IDS) {
        for (int32_t rr = 0; rr < nn; ++rr) {
          const uint8_t* brow = b + (rr + pp) * ppn + pp;
          uint8_t* orow = out + rr * nn;
          if (use_lut) {
            for (int32_t cc = 0; cc < nn; ++cc) orow[cc] = lt[brow[cc]];
          } else {
            memcpy(orow, brow, static_cast<size_t>(nn));
          }
        }
        out[r * nn + c] = use_lut ? lt[AGENT] : static_cast<uint8_t>(AGENT);
        return;
      }
      if (mode == ONEHOT) memset(out, 0, static_cast<size_t>(10 * n2));
      for (int32_t rr = 0; rr < nn; ++rr) {
        const uint8_t* brow = b + (rr + pp) * ppn + pp;
        for (int32_t cc = 0; cc < nn; ++cc) put(out, rr * nn + cc, use_lut ? lt[brow[cc]] : brow[cc]);
      }
      const int32_t k = r * nn + c;  // the agent's cell: its one-hot row is rewritten
      if (mode == ONEHOT) memset(out + 10 * k, 0, 10);
      put(out, k, use_lut ? lt[AGENT] : static_cast<uint8_t>(AGENT));
      return;
    }
    const int32_t hi = n - 1;
    const int32_t rlo = r > 0 ? r - 1 : 0, rhi = r < hi ? r + 1 : hi;
    const int32_t clo = c > 0 ? c - 1 : 0, chi = c < hi ? c + 1 : hi;
    if (mode == IDS) {
      local_ids<true>(out, b, lt, r, c, rlo, rhi, clo, chi);
      return;
    }
    if (mode == ONEHOT) {
      memset(out, 0, static_cast<size_t>(10 * n2));
    } else {
      const uint32_t rgb = palette(lt[UNSEEN]);
      for (int32_t k = 0; k < n2; ++k) {
        out[3 * k] = static_cast<uint8_t>(rgb >> 16);
        out[3 * k + 1] = static_cast<uint8_t>(rgb >> 8);
        out[3 * k + 2] = static_cast<uint8_t>(rgb);
      }
    }
    for (int32_t rr = rlo; rr <= rhi; ++rr) {
      for (int32_t cc = clo; cc <= chi; ++cc) put(out, rr * n + cc, cell(b, lt, rr, cc, r, c));
    }
  }
  MK_HD_INLINE void observe(int64_t i, int32_t task, uint8_t* out, const EnvCtx&) const {
    if (view == PATCH && mode == IDS) {
      const uint8_t* b = board + i * bsize;
      const int32_t* ag = agent + 4 * i;
      if (use_lut) {
        patch_ids<true>(out, b, lut + 16 * static_cast<int64_t>(task), ag[0], ag[1]);
      } else {
        patch_ids<false>(out, b, nullptr, ag[0], ag[1]);
      }
      return;
    }
    if (view != LOCAL || mode != IDS) {
      observe_other(i, task, out);
      return;
    }
    // the hot path: local view, tile ids (through the task's id permutation in intended mode)
    const uint8_t* b = board + i * bsize;
    const int32_t* ag = agent + 4 * i;
    const int32_t r = ag[0], c = ag[1], hi = n - 1;
    const int32_t rlo = r > 0 ? r - 1 : 0, rhi = r < hi ? r + 1 : hi;
    const int32_t clo = c > 0 ? c - 1 : 0, chi = c < hi ? c + 1 : hi;
    // clamped 3x3: an off-board neighbour lands on a visible cell and writes that cell's value
    if (use_lut) {
      local_ids<true>(out, b, lut + 16 * static_cast<int64_t>(task), r, c, rlo, rhi, clo, chi);
    } else {
      local_ids<false>(out, b, nullptr, r, c, rlo, rhi, clo, chi);
    }
  }

};

}  // namespace envs
}  // namespace metakern
