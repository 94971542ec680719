"""Krazy World (Stadie et al. 2018, "Some Considerations on Learning to Explore via Meta-RL"), vectorized.

The rules follow krazyworld 2.0 (``bstadie/krazyworld``, ``krazy_gridworld.py`` @ d97fa07), with the
walls / key / door and multi-cell dynamics of the legacy pygame version as options.

Rules (both modes)
------------------
* An N x N board (default 10) of tiles with the 2.0 ids: hole 0 (impassable), normal 1, goal 2,
  agent 3 (observations only), transporter 4, door 5, key 6, death 7, ice 8, energy 9.
* 4 actions. Each task has its own *controls*: action ``a`` moves the agent by ``moves[a]`` =
  (d_row, d_col). ``dynamics="simple"`` (default, 2.0's ``change_dynamics``) is a random
  permutation of the four unit moves (row+1, row-1, col+1, col-1); ``"default"`` is the identity
  (action 0: row+1, 1: row-1, 2: col+1, 3: col-1); ``"moderate"`` / ``"hard"`` (legacy) sum 2 / 3
  independent permutations, so a move can be up to 2 / 3 cells, diagonal, or a no-op. A multi-cell
  move is checked at its destination only (it must be on the board and passable): it jumps over
  whatever lies between, like a chess knight.
* Step: energy -= 1; the agent moves if the destination is legal (on the board, not a hole, not a
  door unless the key is held), else stays; then the tile it stands on acts (also when it did not
  move, as in 2.0): death -> dead; goal -> collected (becomes normal, +1 goal); energy -> becomes
  normal, energy += ``energy_replenish``; key -> held (becomes normal); transporter -> teleport to
  its pair (no tile action at the destination). Then, while the agent stands on ice and the same
  move is legal from there, it slides one more move and the new tile acts (the slide stops on the
  first non-ice cell, so a goal at the end of an ice run is collected in the same step; the reward
  counts every goal collected in the step); the slide is a bounded loop (a slide never revisits a
  cell, so it stops within N moves; a no-op move does not slide). Finally the episode terminates
  when the agent is dead or its energy is below 1.
* Reward: sparse (default) = goals collected in this step; dense = the change of
  ``-sum_g L1(agent, g) + 3 * goals_collected`` over the task's goal list (as 2.0: the list keeps
  collected goals).
* Reset within a trial restores the same board, start, energy (``num_steps_before_energy_needed``)
  and no key: 2.0's default ``reset()``. A new trial may draw another task (``BatchedEnv``).
* Observations (``obs_view`` x ``obs_mode``): ``"full"`` = the whole board, ``"local"`` = the
  whole-board array with everything outside the agent's 3x3 neighbourhood blanked (2.0's
  ``use_local_obs``: the shape stays N*N); the agent's cell reads 3. ``"ids"`` = one uint8 tile id per
  cell, shape (N*N,); ``"patch"`` = only the 3x3 neighbourhood, row-major with the agent in the middle
  (9 cells; off-board cells read as blanked): the compact form a network consumes, and the fastest.
  ``"onehot"`` = uint8 one-hot over the 10 ids per cell, (N*N*10,) (patch: (90,)), blanked
  cells all zero; ``"image"`` = (N, N, 3) uint8, one pixel per cell, colours from the 10-colour 2.0
  palette permuted per task. Default: the E-MAML settings (``"local"``, ``"ids"``).

Tasks
-----
A task (board, start cell, controls, colour permutation) is generated from an integer task seed
when the pool is built; stepping and resetting only copy from the pool. ``split``: ``"emaml_train"``
(task seeds 0..31, the 32 training tasks of E-MAML), ``"emaml_test"`` (100..163, the 64 test tasks),
``"train"`` / ``"test"`` (``num_tasks`` seeds from 1_000_000 / 2_000_000 on: disjoint for up to a
million tasks each), or pass ``task_seeds`` explicitly.

``legacy_quirks``
-----------------
``legacy_quirks=False`` (default) plays the rules the README / paper intend; ``True`` reproduces the
2.0 code, quirks included, so that the board and start of task seed ``s`` are exactly those of
``KrazyGridWorld(task_seed=s, ...)`` (the constructor draws a throw-away board with the agent at
(0, 0), then ``reset_task()`` draws the real board with the agent at (-1, -1) and the start on a
random normal cell, all from ``np.random.RandomState(s)``); the colour permutation and the controls
are then drawn from the same RandomState as one ``reset(reset_colors=True, reset_dynamics=True)``
does (colours first, one ``shuffle`` per dynamics level). The differences:

=================================  ==============================================  ================================
item                               ``legacy_quirks=True`` (2.0 code)                ``False`` (intended)
=================================  ==============================================  ================================
random cells                       ``randint(0, N-1)``: last row/column never        any cell of the board
                                   special, never the start
counts                             ``int(N*N*p)`` draws, duplicates collapse         exactly ``int(N*N*p)`` distinct
                                   (fewer tiles; goals too)                          cells of each kind
min_goal_distance                  checked against (-1, -1), i.e. only excludes      ``min < L1(start, goal) < max``
                                   cell (0, 0)                                       from the real start
ice                                1 energy per slid cell                            sliding is free
colour permutation                 only in image obs; ids are fixed                  also permutes the ids (and the
                                                                                     one-hot channels): "permuting the
                                                                                     colours permutes the types the
                                                                                     basis vectors represent" (paper);
                                                                                     the agent keeps id 3
blanked cells of local obs         0 = the hole id (ids), black (image)              10 (ids), grey (image); one-hot:
                                                                                     all-zero rows in both modes
task RNG                           ``np.random.RandomState(seed)`` (2.0 order)        ``np.random.default_rng(seed)``
walls / key / door                 not available (2.0 has none)                       ``walls=True``
=================================  ==============================================  ================================

Intended-mode generation order: walls (if any), start (uniform over the free cells; with walls,
outside the walled-in quadrant), death, energy, ice, transporter pairs, goals, key, each drawn
without replacement from the remaining normal cells; death and ice keep L1 > 2 from the door (as
legacy). Walls (legacy ``num_keys > 0``): an L of holes from a random interior corner to two board
edges walls in one quadrant; one arm cell (not the corner) is the door; the start and the key lie
outside. Both modes keep 2.0's "the tile acts also when the move was blocked" (standing on a
transporter and bumping into the edge teleports again). In 2.0 the legality test indexes the grid as
[col, row] (transposed); it only matters with holes / doors, which 2.0 never places, so both modes
index [row, col].

The compiled kernel is ``cpp/envs/krazy.h``; ``ref_*`` below is its readable reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .core import BatchedEnv, Family, StateSpec, split_family_kwargs

HOLE, NORMAL, GOAL, AGENT, TRANSPORTER, DOOR, KEY, DEATH, ICE, ENERGY = range(10)
TILE_NAMES = ("hole", "normal", "goal", "agent", "transporter", "door", "key", "death", "ice", "energy")
UNSEEN = 10  # id of a blanked cell in intended-mode local tile-id observations

# 2.0 palette, in tile-id order: black, white, gold, blue, orange, silver, magenta, red, purple, green
PALETTE = np.array(
    [
        (0, 0, 0),
        (255, 255, 255),
        (255, 223, 0),
        (0, 0, 255),
        (255, 140, 0),
        (192, 192, 192),
        (255, 0, 255),
        (255, 0, 0),
        (75, 0, 130),
        (0, 255, 0),
        (0, 0, 0),  # slot 10: blanked (quirk mode: black)
        (128, 128, 128),  # slot 11: blanked (intended mode: grey)
    ],
    dtype=np.uint8,
)

# unit moves of 2.0's Agent.try_step: dynamics[k] is the action that makes move k
UNIT_MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))
DYNAMICS_LEVELS = {"default": 0, "simple": 1, "moderate": 2, "hard": 3}
OBS_VIEWS = ("local", "full", "patch")
OBS_MODES = ("ids", "onehot", "image")

EMAML_TRAIN_SEEDS = tuple(range(32))
EMAML_TEST_SEEDS = tuple(range(100, 164))
TRAIN_SEED_BASE, TEST_SEED_BASE, SPLIT_MAX = 1_000_000, 2_000_000, 1_000_000


def split_seeds(split: str, num_tasks: int | None = None) -> list[int]:
    """The task seeds of a named split (see the module docstring)."""
    if split == "emaml_train":
        return list(EMAML_TRAIN_SEEDS)
    if split == "emaml_test":
        return list(EMAML_TEST_SEEDS)
    if split in ("train", "test"):
        if num_tasks is None:
            num_tasks = 1024
        if not isinstance(num_tasks, int) or isinstance(num_tasks, bool) or not 1 <= num_tasks <= SPLIT_MAX:
            raise ValueError(f"num_tasks must be an int in [1, {SPLIT_MAX}], got {num_tasks!r}")
        base = TRAIN_SEED_BASE if split == "train" else TEST_SEED_BASE
        return list(range(base, base + num_tasks))
    raise ValueError(f"split must be 'emaml_train', 'emaml_test', 'train' or 'test', got {split!r}")


# ---------------------------------------------------------------------------------------------------
# Task generation


class _Task:
    __slots__ = ("goals", "grid", "moves", "pairs", "perm", "start")


class _Retry(Exception):
    pass


def _moves_from_dyn(perms: list[list[int]]) -> np.ndarray:
    """moves[a] = sum over the permutations p of the unit move k with p[k] == a."""
    moves = np.zeros((4, 2), dtype=np.int32)
    for p in perms:
        for k, a in enumerate(p):
            moves[a] += UNIT_MOVES[k]
    return moves


def _gen_quirks(seed: int, cfg: dict) -> _Task:
    """The 2.0 code's board generation, draw for draw (np.random.RandomState(seed))."""
    n = cfg["size"]
    rs = np.random.RandomState(seed)
    budget = [cfg["max_draws"]]

    def draw() -> tuple[int, int]:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"task seed {seed}: board generation did not finish (the settings leave too few cells)")
        g = rs.randint(0, n - 1, (2,))
        return int(g[0]), int(g[1])

    def non_agent(agent) -> tuple[int, int]:
        while True:
            g = draw()
            if g[0] != agent[0] or g[1] != agent[1]:
                return g

    def board(agent):
        grid = np.full((n, n), NORMAL, dtype=np.uint8)
        for tile, frac in ((DEATH, cfg["death"]), (ENERGY, cfg["energy"]), (ICE, cfg["ice"])):
            count = int(n * n * frac)
            picks = []
            while len(picks) < count:
                d = non_agent(agent)
                if grid[d] == NORMAL:
                    picks.append(d)
            for d in picks:
                grid[d] = tile
        while True:  # transporters: all pairs at once, start over if any cell is not normal
            pairs = []
            for _ in range(cfg["transporters"]):
                g1, g2 = non_agent(agent), non_agent(agent)
                if grid[g1] == NORMAL and grid[g2] == NORMAL:
                    pairs.append((g1, g2))
            if len(pairs) == cfg["transporters"]:
                break
        for g1, g2 in pairs:
            grid[g1] = TRANSPORTER
            grid[g2] = TRANSPORTER
        goals = []
        while len(goals) < cfg["goals"]:
            g = non_agent(agent)
            if grid[g] == NORMAL:
                dist = abs(g[1] - agent[0]) + abs(g[0] - agent[1])  # 2.0 swaps the coordinates here
                if cfg["min_goal"] < dist < cfg["max_goal"]:
                    goals.append(g)
        for g in goals:
            grid[g] = GOAL
        return grid, goals, pairs

    board((0, 0))  # the constructor's board (agent at its initial [0, 0]); reset_task() replaces it
    grid, goals, pairs = board((-1, -1))
    while True:  # get_one_normal_square
        start = draw()
        if grid[start] == NORMAL:
            break
    t = _Task()
    t.grid, t.start, t.goals, t.pairs = grid, start, goals, pairs
    perm = list(range(10))
    if cfg["permute_colors"]:
        rs.shuffle(perm)
    t.perm = perm
    perms = []
    for _ in range(DYNAMICS_LEVELS[cfg["dynamics"]]):
        d = [0, 1, 2, 3]
        rs.shuffle(d)
        perms.append(d)
    t.moves = _moves_from_dyn(perms) if perms else _moves_from_dyn([[0, 1, 2, 3]])
    return t


def _gen_intended(seed: int, cfg: dict) -> _Task:
    """Exact counts over the whole board, goal distance from the real start, optional walls."""
    n = cfg["size"]
    rng = np.random.default_rng(seed)
    grid = np.full((n, n), NORMAL, dtype=np.uint8)
    outside = np.ones((n, n), dtype=bool)  # cells on the start's side of the wall
    door = None
    if cfg["walls"]:
        wr, wc = (int(v) for v in rng.integers(2, n - 2, size=2))
        sv, sh = (int(v) for v in rng.choice([-1, 1], size=2))
        arm = [(r, wc) for r in (range(wr, n) if sv > 0 else range(0, wr + 1))]
        arm += [(wr, c) for c in (range(wc, n) if sh > 0 else range(0, wc + 1))]
        for cell in arm:
            grid[cell] = HOLE
        rows = np.arange(n)[:, None]
        cols = np.arange(n)[None, :]
        inside = ((rows - wr) * sv > 0) & ((cols - wc) * sh > 0)
        outside = ~inside & (grid == NORMAL)
        doors = [c for c in arm if c != (wr, wc)]
        door = doors[int(rng.integers(len(doors)))]
        grid[door] = DOOR

    def pick(mask: np.ndarray, count: int, what: str) -> list[tuple[int, int]]:
        cells = np.flatnonzero(mask)
        if len(cells) < count:
            raise ValueError(f"task seed {seed}: only {len(cells)} cells left for {count} {what} tiles")
        chosen = rng.choice(cells, size=count, replace=False) if count else []
        return [(int(c) // n, int(c) % n) for c in chosen]

    rows, cols = np.indices((n, n))
    (start,) = pick(outside & (grid == NORMAL), 1, "start")
    free = np.ones((n, n), dtype=bool)
    free[start] = False
    far_door = np.ones((n, n), dtype=bool)
    if door is not None:
        far_door = np.abs(rows - door[0]) + np.abs(cols - door[1]) > 2
    for tile, frac, near in (
        (DEATH, cfg["death"], far_door),
        (ENERGY, cfg["energy"], None),
        (ICE, cfg["ice"], far_door),
    ):
        mask = free & (grid == NORMAL)
        if near is not None:
            mask &= near
        for c in pick(mask, int(n * n * frac), TILE_NAMES[tile]):
            grid[c] = tile
    cells = pick(free & (grid == NORMAL), 2 * cfg["transporters"], "transporter")
    pairs = [(cells[2 * k], cells[2 * k + 1]) for k in range(cfg["transporters"])]
    for c in cells:
        grid[c] = TRANSPORTER
    dist = np.abs(rows - start[0]) + np.abs(cols - start[1])
    near_ok = (dist > cfg["min_goal"]) & (dist < cfg["max_goal"])
    goals = pick(free & (grid == NORMAL) & near_ok, cfg["goals"], "goal")
    for c in goals:
        grid[c] = GOAL
    if door is not None:
        (key,) = pick(free & outside & (grid == NORMAL), 1, "key")
        grid[key] = KEY
    t = _Task()
    t.grid, t.start, t.goals, t.pairs = grid, start, goals, pairs
    t.perm = [int(v) for v in rng.permutation(10)] if cfg["permute_colors"] else list(range(10))
    level = DYNAMICS_LEVELS[cfg["dynamics"]]
    perms = [[int(v) for v in rng.permutation(4)] for _ in range(level)] or [[0, 1, 2, 3]]
    t.moves = _moves_from_dyn(perms)
    return t


def _id_permutation(perm: np.ndarray) -> np.ndarray:
    """The tile-id map of intended-mode symbolic observations: the colour permutation with the
    agent's id held at 3 (the other nine ids keep the order the colour permutation gives them)."""
    others = [t for t in range(10) if t != AGENT]
    values = [int(v) for v in perm if v != AGENT]
    out = np.empty(10, dtype=np.uint8)
    out[AGENT] = AGENT
    out[others] = values
    return out


def generate_task(seed: int, cfg: dict) -> _Task:
    return _gen_quirks(seed, cfg) if cfg["legacy_quirks"] else _gen_intended(seed, cfg)


# ---------------------------------------------------------------------------------------------------
# The family


def _check_frac(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
    return float(v)


def _check_int(name: str, v, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an int {bound}, got {v!r}")
    return int(v)


class KrazyFamily(Family):
    """Krazy World rules with a pool of tasks generated from task seeds (see the module docstring)."""

    name = "krazy"
    num_actions = 4
    obs_dtype = torch.uint8

    def __init__(
        self,
        *,
        size: int = 10,
        split: str = "emaml_train",
        num_tasks: int | None = None,
        task_seeds: Sequence[int] | None = None,
        legacy_quirks: bool = False,
        obs_view: str = "local",
        obs_mode: str = "ids",
        death_square_percentage: float = 0.08,
        ice_sq_perc: float = 0.05,
        energy_sq_perc: float = 0.05,
        num_goals: int = 3,
        min_goal_distance: int = 2,
        max_goal_distance: float | None = None,
        num_transporters: int = 1,
        num_steps_before_energy_needed: int | None = 50,
        energy_replenish: int = 8,
        sparse_rewards: bool = True,
        dynamics: str = "simple",
        permute_colors: bool = True,
        walls: bool = False,
    ):
        size = _check_int("size", size, 3, 64)
        for name, v in (("legacy_quirks", legacy_quirks), ("sparse_rewards", sparse_rewards)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {v!r}")
        for name, v in (("permute_colors", permute_colors), ("walls", walls)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {v!r}")
        if obs_view not in OBS_VIEWS:
            raise ValueError(f"obs_view must be one of {OBS_VIEWS}, got {obs_view!r}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if dynamics not in DYNAMICS_LEVELS:
            raise ValueError(f"dynamics must be one of {tuple(DYNAMICS_LEVELS)}, got {dynamics!r}")
        if walls and legacy_quirks:
            raise ValueError("walls are not part of krazyworld 2.0: use legacy_quirks=False with walls=True")
        if walls and size < 5:
            raise ValueError(f"walls need size >= 5, got {size}")
        death = _check_frac("death_square_percentage", death_square_percentage)
        ice = _check_frac("ice_sq_perc", ice_sq_perc)
        energy_frac = _check_frac("energy_sq_perc", energy_sq_perc)
        num_goals = _check_int("num_goals", num_goals, 0, 64)
        num_transporters = _check_int("num_transporters", num_transporters, 0, 16)
        min_goal_distance = _check_int("min_goal_distance", min_goal_distance, -1)
        if max_goal_distance is None:
            max_goal_distance = math.inf
        if isinstance(max_goal_distance, bool) or not isinstance(max_goal_distance, (int, float)):
            raise ValueError(f"max_goal_distance must be a number or None, got {max_goal_distance!r}")
        if num_steps_before_energy_needed is None:
            energy_init = 1 << 30  # no energy limit in practice
        else:
            energy_init = _check_int("num_steps_before_energy_needed", num_steps_before_energy_needed, 1, 1 << 30)
        energy_replenish = _check_int("energy_replenish", energy_replenish, 0, 1 << 20)
        counts = sum(int(size * size * f) for f in (death, ice, energy_frac)) + 2 * num_transporters + num_goals + 1
        room = (size - 1) ** 2 - 1 if legacy_quirks else size * size - (3 * size if walls else 0)
        if counts > room:
            raise ValueError(
                f"the special tiles ({counts - 1}) and the start do not fit on a {size}x{size} board"
                + (" (legacy_quirks leaves (N-1)^2 - 1 cells)" if legacy_quirks else "")
            )
        if task_seeds is None:
            seeds = split_seeds(split, num_tasks)
        else:
            if num_tasks is not None:
                raise ValueError("pass either task_seeds or num_tasks, not both")
            seeds = [int(s) for s in task_seeds]
            if not seeds or any(s < 0 or s >= 2**32 for s in seeds):
                raise ValueError("task_seeds must be a non-empty list of ints in [0, 2**32)")
        self.size = size
        self.legacy_quirks = legacy_quirks
        self.obs_view, self.obs_mode = obs_view, obs_mode
        self.sparse_rewards = sparse_rewards
        self.dynamics = dynamics
        self.energy_init, self.energy_replenish = energy_init, energy_replenish
        self.num_goals, self.num_transporters = num_goals, num_transporters
        self.pad = max(1, DYNAMICS_LEVELS[dynamics])
        self.cfg = dict(
            size=size,
            legacy_quirks=legacy_quirks,
            death=death,
            ice=ice,
            energy=energy_frac,
            goals=num_goals,
            min_goal=min_goal_distance,
            max_goal=max_goal_distance,
            transporters=num_transporters,
            dynamics=dynamics,
            permute_colors=permute_colors,
            walls=walls,
            max_draws=1_000_000,
        )
        n2 = size * size
        if obs_view == "patch":
            self.obs_shape = {"ids": (9,), "onehot": (90,), "image": (3, 3, 3)}[obs_mode]
        else:
            self.obs_shape = {"ids": (n2,), "onehot": (n2 * 10,), "image": (size, size, 3)}[obs_mode]
        self._build_pool(seeds)

    # -- pool ------------------------------------------------------------------------------------

    def _build_pool(self, seeds: list[int]) -> None:
        n, pad = self.size, self.pad
        pn = n + 2 * pad
        P = len(seeds)
        board = np.zeros((P, pn, pn), dtype=np.uint8)  # border: holes
        start = np.zeros((P, 2), dtype=np.int32)
        goals = np.zeros((P, max(1, self.num_goals), 2), dtype=np.int32)
        tele = np.zeros((P, max(1, self.num_transporters), 4), dtype=np.int32)
        lut = np.zeros((P, 16), dtype=np.uint8)
        moves = np.zeros((P, 4, 2), dtype=np.int32)
        use_perm_ids = not self.legacy_quirks  # intended: the colour permutation reaches the ids
        for k, s in enumerate(seeds):
            t = generate_task(s, self.cfg)
            board[k, pad : pad + n, pad : pad + n] = t.grid
            start[k] = t.start
            for j, g in enumerate(t.goals):
                goals[k, j] = g
            for j, (a, b) in enumerate(t.pairs):
                tele[k, j] = (a[0], a[1], b[0], b[1])
            moves[k] = t.moves
            perm = np.asarray(t.perm, dtype=np.uint8)
            if self.obs_mode == "image":
                lut[k, :10] = perm  # palette slot of each tile id
                lut[k, UNSEEN] = 10 if self.legacy_quirks else 11
            elif use_perm_ids:
                lut[k, :10] = _id_permutation(perm)
                lut[k, UNSEEN] = UNSEEN
            else:
                lut[k, :10] = np.arange(10)
                lut[k, UNSEEN] = HOLE
        self.task_seeds = torch.tensor(seeds, dtype=torch.int64)
        self.board = torch.from_numpy(board.reshape(P, pn * pn))
        self.start = torch.from_numpy(start)
        self.goals = torch.from_numpy(goals)
        self.tele = torch.from_numpy(tele)
        self.lut = torch.from_numpy(lut)
        self.moves = torch.from_numpy(moves.reshape(P, 8))
        # the kernel can skip the id lookup when it is the identity
        ident = np.zeros(16, dtype=np.uint8)
        ident[:10] = np.arange(10)
        self._use_lut = int(self.obs_mode == "image" or (use_perm_ids and bool((lut[:, :10] != ident[:10]).any())))
        self._unseen = 0 if self.legacy_quirks else UNSEEN  # blanked id when the lut is skipped

    def state_spec(self):
        pn = self.size + 2 * self.pad
        return {"board": StateSpec((pn * pn,), torch.uint8), "agent": StateSpec((4,), torch.int32)}

    def pool(self):
        return {
            "board": self.board,
            "start": self.start,
            "goals": self.goals,
            "tele": self.tele,
            "lut": self.lut,
            "moves": self.moves,
        }

    def to(self, device):
        for k in ("board", "start", "goals", "tele", "lut", "moves"):
            setattr(self, k, getattr(self, k).to(device))

    def kernel_args(self, state):
        ints = [
            self.size,
            self.pad,
            OBS_VIEWS.index(self.obs_view),
            OBS_MODES.index(self.obs_mode),
            int(self.legacy_quirks),
            int(not self.sparse_rewards),
            self.num_goals,
            self.num_transporters,
            self.energy_init,
            self.energy_replenish,
            self._use_lut,
            self._unseen,
        ]
        tensors = [state["board"], state["agent"], self.board, self.start, self.goals, self.tele, self.lut, self.moves]
        return tensors, ints, []

    # -- numpy reference -------------------------------------------------------------------------

    def _idx(self, r: int, c: int) -> int:
        return (r + self.pad) * (self.size + 2 * self.pad) + c + self.pad

    def ref_reset(self, S, P, i, task, rng):
        S.board[i] = P.board[task]
        S.agent[i] = (P.start[task, 0], P.start[task, 1], self.energy_init, 0)

    def _dist(self, P, task, r, c) -> int:
        return sum(abs(int(P.goals[task, g, 0]) - r) + abs(int(P.goals[task, g, 1]) - c) for g in range(self.num_goals))

    def _passable(self, tile: int, key: int) -> bool:
        return tile != HOLE and (tile != DOOR or key != 0)

    def ref_step(self, S, P, i, task, action, reward, rng):
        board = S.board[i]
        r, c, energy, key = (int(v) for v in S.agent[i])
        r0, c0 = r, c
        a = int(action[0])
        dr, dc = int(P.moves[task, 2 * a]), int(P.moves[task, 2 * a + 1])
        collected = 0
        dead = False
        energy -= 1
        if self._passable(int(board[self._idx(r + dr, c + dc)]), key):
            r, c = r + dr, c + dc

        def act(r, c, energy, key, collected, dead):
            j = self._idx(r, c)
            tile = int(board[j])
            if tile == DEATH:
                dead = True
            elif tile == GOAL:
                board[j] = NORMAL
                collected += 1
            elif tile == ENERGY:
                board[j] = NORMAL
                energy += self.energy_replenish
            elif tile == KEY:
                board[j] = NORMAL
                key = 1
            elif tile == TRANSPORTER:
                r, c = self._teleport(P, task, r, c)
            return r, c, energy, key, collected, dead

        r, c, energy, key, collected, dead = act(r, c, energy, key, collected, dead)
        for _ in range(self.size):  # the ice slide: at most N moves
            if int(board[self._idx(r, c)]) != ICE or (dr == 0 and dc == 0):
                break
            if not self._passable(int(board[self._idx(r + dr, c + dc)]), key):
                break
            if self.legacy_quirks:
                energy -= 1
            r, c = r + dr, c + dc
            r, c, energy, key, collected, dead = act(r, c, energy, key, collected, dead)
        S.agent[i] = (r, c, energy, key)
        if self.sparse_rewards:
            reward[0] = np.float32(collected)
        else:
            reward[0] = np.float32(self._dist(P, task, r0, c0) - self._dist(P, task, r, c) + 3 * collected)
        return dead or energy < 1

    def _teleport(self, P, task, r, c) -> tuple[int, int]:
        nr, nc = r, c
        for k in range(self.num_transporters):  # the last matching pair wins, as in 2.0
            t = [int(v) for v in P.tele[task, k]]
            if r == t[0] and c == t[1]:
                nr, nc = t[2], t[3]
            elif r == t[2] and c == t[3]:
                nr, nc = t[0], t[1]
        return nr, nc

    def _cell_value(self, S, i, r, c) -> int:
        ar, ac = int(S.agent[i, 0]), int(S.agent[i, 1])
        return AGENT if (r == ar and c == ac) else int(S.board[i, self._idx(r, c)])

    def ref_observe(self, S, P, i, task, out, ctx):
        n = self.size
        lut = P.lut[task]
        ar, ac = int(S.agent[i, 0]), int(S.agent[i, 1])
        if self.obs_view == "patch":
            # the 3x3 neighbourhood, row-major; an off-board cell reads as unseen (one-hot: all zeros)
            cells = [(ar + k // 3 - 1, ac + k % 3 - 1) for k in range(9)]
            flat = out.reshape(9, -1)
            flat[:] = 0
            for k, (r, c) in enumerate(cells):
                inside = 0 <= r < n and 0 <= c < n
                if not inside and self.obs_mode == "onehot":
                    continue
                v = int(lut[self._cell_value(S, i, r, c)]) if inside else int(lut[UNSEEN])
                if self.obs_mode == "ids":
                    flat[k, 0] = v
                elif self.obs_mode == "onehot":
                    flat[k, v] = 1
                else:
                    flat[k] = PALETTE[v]
            return
        if self.obs_view == "full":
            visible = [(r, c) for r in range(n) for c in range(n)]
        else:
            visible = [
                (r, c) for r in range(ar - 1, ar + 2) for c in range(ac - 1, ac + 2) if 0 <= r < n and 0 <= c < n
            ]
        if self.obs_mode == "ids":
            out[:] = lut[UNSEEN]
            for r, c in visible:
                out[r * n + c] = lut[self._cell_value(S, i, r, c)]
        elif self.obs_mode == "onehot":
            out[:] = 0
            for r, c in visible:
                out[(r * n + c) * 10 + int(lut[self._cell_value(S, i, r, c)])] = 1
        else:
            img = out.reshape(n, n, 3)
            img[:, :] = PALETTE[int(lut[UNSEEN])]
            for r, c in visible:
                img[r, c] = PALETTE[int(lut[self._cell_value(S, i, r, c)])]

    # -- gymnasium and rendering -----------------------------------------------------------------

    def single_observation_space(self):
        import gymnasium

        high = {"ids": UNSEEN if not self.legacy_quirks else 9, "onehot": 1, "image": 255}[self.obs_mode]
        return gymnasium.spaces.Box(0, high, shape=self.obs_shape, dtype=np.uint8)

    def render_rgb(self, S, P, i, task, cell: int = 24):
        """The whole board, ``cell`` pixels per tile: the 2.0 colours (the task's permuted palette when
        ``obs_mode="image"``), the agent in its colour (blue by default), cells outside the 3x3 view
        darkened when the observation is local, grey grid lines."""
        n = self.size
        lut = P.lut[task]
        perm = lut[:10] if self.obs_mode == "image" else np.arange(10)
        img = np.zeros((n, n, 3), dtype=np.uint8)
        for r in range(n):
            for c in range(n):
                img[r, c] = PALETTE[int(perm[self._cell_value(S, i, r, c)])]
        big = np.repeat(np.repeat(img, cell, axis=0), cell, axis=1)
        if self.obs_view in ("local", "patch"):
            ar, ac = int(S.agent[i, 0]), int(S.agent[i, 1])
            mask = np.full((n, n), True)
            mask[max(ar - 1, 0) : ar + 2, max(ac - 1, 0) : ac + 2] = False
            m = np.repeat(np.repeat(mask, cell, axis=0), cell, axis=1)
            big[m] = (big[m] // 2).astype(np.uint8)
        big[::cell, :] = 90  # grid lines
        big[:, ::cell] = 90
        return big


def KrazyWorld(
    num_envs: int,
    *,
    max_steps: int | None = 100,
    episodes_per_trial: int = 5,
    explore_episodes: int = 3,
    **kwargs,
) -> BatchedEnv:
    """A batch of Krazy World environments (functional API).

    Keyword arguments of ``KrazyFamily`` (``size``, ``split``, ``num_tasks``, ``task_seeds``,
    ``legacy_quirks``, ``obs_view``, ``obs_mode``, the tile percentages, ``num_goals``,
    ``min_goal_distance``, ``max_goal_distance``, ``num_transporters``,
    ``num_steps_before_energy_needed``, ``energy_replenish``, ``sparse_rewards``, ``dynamics``,
    ``permute_colors``, ``walls``) choose the rules and tasks; the others go to ``BatchedEnv``.
    Defaults are the "E-MAML settings" of the spec (10x10, local view, tile ids, death 0.08, ice 0.05,
    energy tiles 0.05, 3 goals, min goal distance 2, 50 steps of energy, +8 per energy tile, one
    transporter pair, sparse rewards) with permuted controls, the 32 E-MAML training tasks, episodes of
    at most 100 steps (``max_ep_len``) and the paper's E-RL2 trials (5 episodes, the first 3
    exploratory). See the module docstring for the rules and ``legacy_quirks``.
    """
    family_kwargs, env_kwargs = split_family_kwargs(KrazyFamily, kwargs)
    return BatchedEnv(
        KrazyFamily(**family_kwargs),
        num_envs,
        max_steps=max_steps,
        episodes_per_trial=episodes_per_trial,
        explore_episodes=explore_episodes,
        **env_kwargs,
    )


KrazyWorldFamily = KrazyFamily  # the name metakern.envs exports
