"""E-MAML mazes (Stadie et al. 2018, Sec. 4.2): reach the goal cell of a procedurally generated maze.

The reference is geyang/e-maml ``e_maml_tf/custom_vendor/maze_env.py`` (336291d6); the spec is
``spec/gridworlds.md`` §1.4. A task is (maze, start cell, goal cell); a trial plays several
episodes of one task, and the agent returns to the same start at every episode, so a recurrent
agent can learn the maze in the first episodes and exploit it in the later ones (E-RL2).

Grid and actions. A maze is a boolean wall grid of ``size x size`` squares (True = wall) whose
border is all wall, so a move never leaves the grid. Positions are (row, col), the reference's
(x, y) (it indexes ``mazes[i, x, y]``, so x is the row); the four actions
are the reference's ``_action_set``: 0 = (0, +1) col + 1 ("right"), 1 = (0, -1) col - 1
("left"), 2 = (+1, 0) row + 1 ("down"), 3 = (-1, 0) row - 1 ("up"). A move into a wall leaves the
agent where it is and counts a wall hit.

Reward, termination (the default ``variant="emaml"``; the MetODS variant below changes both).
``c = 1 / horizon``; the reward of a step is
``(1 + c) * at_goal - 1e-3 * hit_wall - c``, evaluated in float32 (``reward_table``: the kernels read
these four float32 values, so every backend returns the same bits): ``-c`` per ordinary step,
``-c - 0.001`` per wall hit, ``1`` on reaching the goal. The episode terminates when the agent is on
the goal after a move; the driver's time limit (``max_steps``) truncates it after ``horizon`` steps.
The reference computes the same formula in float64.

Observation (float32, 15): ``[new_episode, prev_reward, one_hot(prev_action) (4), 3x3 walls (9)]``
where the patch is the wall grid around the agent in row-major order (``patch[3 * (dr + 1) +
(dc + 1)]`` for offsets dr, dc in -1..1; the centre is always 0). ``new_episode``, ``prev_reward`` and
``prev_action`` come from the driver: they are 1 / 0 / -1 at the start of a trial, and
``prev_action = -1`` gives an all-zero one-hot. Differences from the reference code:

* the reference writes the previous-action one-hot with ``obs[np.arange(1), 2 + actions] = 1``, so
  only environment 0 of its batch ever receives it (a bug); here every environment does.
* as in the reference, the first observation of a later episode of the trial carries the last
  step's reward and action (the reference returns it from the step that ended the episode, with
  the new-episode flag set); the first observation of a trial has zeros in both codes.
* start == goal is allowed by the reference (start and goal are drawn independently); here it is
  excluded unless ``allow_start_at_goal=True``. With it allowed, the episode still ends only after
  a step that ends on the goal (as in the reference): staying on the goal by bumping a wall
  terminates with reward ``1 - 0.001``.

Maze generation (the reference loads 10k pre-generated mazes per size from ``mazes_10k_10x10.npz``,
``mazes_10k_20x20.npz`` and ``mazes_test_10k_20x20.npz``, which are not public and whose generator is
unknown). Here every maze is a *perfect maze* (exactly one simple path between any two free
squares), made by a randomized depth-first search (recursive backtracker) on a lattice of
``n = (size - 1) // 2`` rooms per side. Room (r, c) is square (2r + 1, 2c + 1); the carved passage
between two neighbouring rooms is the square between them. ``size`` is the side of the wall array,
border included, as in the reference's data files: the paper's "20 x 20 squares" maze is
``size=20`` (9 x 9 rooms, 161 free squares) and the reference's 10x10 is ``size=10`` (4 x 4 rooms, 31
free squares). An odd size uses the whole array; an even size leaves the last-but-one row and
column as wall too (the bottom/right border is two squares thick). Maze k of a split is a pure
function of (maze_seed, split, size, k): every random draw of its search is a counter-based hash
of those, so the pool is the same whatever its length or the machine, and the generation is
vectorized over mazes in numpy (10k mazes of size 20 take a fraction of a second).

Splits: ``split="train"`` and ``split="test"`` draw their mazes from different hash streams (the
paper uses separate train and test maze sets). Evaluating on a larger unseen maze size is
``Maze(num_envs, size=30, split="test")``: the observation does not depend on the size. Tiny sizes
have few distinct mazes (size 10: at most 100352 spanning trees of the 4 x 4 lattice), so a large
train and test pool of size 10 share some layouts by chance; from size 20 on a repeat is
practically impossible.

Tasks: task j of a pool uses maze ``j // tasks_per_maze`` with start and goal drawn uniformly from
its free squares (hash of (maze_seed, split, size, j)). The driver draws the task of each new trial
uniformly from the pool (``resample_tasks``), as the reference's ``reset_task`` does from its 10k
mazes.

Horizon (time limit and ``c``): the reference registers ``Maze10-v0``, ``Maze20-v0`` and
``MazeTest-v0`` with ``episode_horizon = max_episode_steps = 12``. On size 10 a shortest path fits in
12 steps for about 70% of tasks (mean shortest path 9.4 steps); on size 20 only for about 17% (mean
40 steps), so 12 is kept for size 10 and scaled with the number of free squares otherwise:
``default_horizon(size) = round(12 * F / 31)`` with ``F = 2 n^2 - 1`` free squares, i.e. 62 for size
20 (about 79% of tasks reachable along the shortest path). ``max_steps=`` sets any other horizon.

Trials: the reference's ``MazeEnv`` default is ``n_episodes = 5`` episodes per task (the E-RL2
protocol: 3 exploratory episodes, report episodes 4 and 5); its registered gym ids pass
``n_episodes = 1`` with ``max_episode_steps = 12``: one episode per task, so gym's time limit and the
env's horizon coincide (the MAML setting, where adaptation happens between separate rollouts). ``Maze`` defaults to
``episodes_per_trial=5``; pass ``episodes_per_trial=1`` for the registered ids' single-episode tasks
and ``explore_episodes=3`` for E-RL2's explore mask.

The MetODS variant (``variant="metods"``). MetODS (Chalvidal et al. 2022, §5; spec
``spec/synapses.md`` §1.3 and §6) evaluates on a maze like Miconi et al.'s Grid Maze
(``uber-research/backpropamine`` ``simplemaze/maze.py``): the same 3x3 wall view and 4 actions, but
reaching the goal gives a reward of 10 and re-places the agent at a random free square; the episode
goes on until its time limit of 100 steps, so an agent with memory finds the goal, then returns to it
again and again (cumulative reward over the 100 steps). Here this is the same family with options:

* ``respawn=True``: a step that ends on the goal does not terminate; the agent is moved to a square
  drawn uniformly from the maze's free squares other than the goal, from the 64 random bits the
  driver passes to the step (so the C++, CUDA and numpy draws agree): with the maze's free squares
  ``free[0 .. F-1]`` in increasing flat order, ``k = rng_below(bits, F - 1)`` (multiply-shift, no
  modulo bias), the square is ``free[k]``, or ``free[F - 1]`` when ``free[k]`` is the goal. The
  step's reward is the goal reward and its observation already shows the 3x3 patch of the new
  square (with ``prev_reward`` = the goal reward, which tells the agent that it was moved).
* reward knobs ``goal_reward``, ``step_cost``, ``wall_penalty``: the reward of a step is
  ``goal_reward * at_goal - wall_penalty * hit_wall - step_cost`` (float32, ``reward_table``), so a
  step onto the goal pays ``goal_reward - step_cost``. The E-MAML defaults are ``goal_reward = 1 + c``,
  ``step_cost = c = 1 / horizon``, ``wall_penalty = 1e-3`` (the table above, bit for bit).
* ``variant="metods"`` presets ``respawn=True, goal_reward=10, step_cost=0, wall_penalty=0`` and, in
  ``Maze``, ``max_steps=100`` and ``episodes_per_trial=1`` (a new task, i.e. maze, start and goal, for
  every 100-step episode). Explicit knobs override the preset. The wall penalty is 0 because
  MetODS' random agent collects a non-negative ``3.8 +- 8.9`` in 100 steps (its table; Miconi's code
  has a wall penalty ``wp``, whose MetODS value is not stated): a penalty, if any, is negligible
  there. With these settings a uniform random policy collects 4.1 +- 6.9 per 100-step episode on
  size 10 (4096 episodes; 31% of them find the goal, the first time at step 80 on average counting
  100 for none), 1.6 on size 14 and 0.7 on size 20 (6% find it, at step 96); MetODS' table gives the
  random agent 3.8 +- 8.9, 5% and step 96.8 on its 10x10 maze.

MetODS tests on "an unseen 10x10 maze" and a "larger maze"; its training maze size and generator
are not stated, nor whether its 10x10 counts the border. ``Maze(..., variant="metods")`` plays the
size-10 perfect mazes above (4 x 4 rooms, 31 free squares); ``Maze(..., size=14 or 20,
split="test", variant="metods")`` evaluates on larger unseen mazes (the observation does not depend
on the size). Miconi's Grid Maze (``backpropamine@a35cd6a``) re-places the agent the same way
(uniform over the free squares other than the goal, by rejection); it differs in that its maze is
one fixed lattice of pillars, the agent starts each episode at the centre with the goal drawn anew,
and its observation adds the step number and a bias input. Here the mazes are the perfect mazes of
the family and the observation is the 15 values above.

The compiled kernel is ``cpp/envs/maze.h``; ``ref_*`` below is its readable reference.
"""

from __future__ import annotations

import numpy as np
import torch

from .core import BatchedEnv, Family, StateSpec, mix64, rng_below

ACTIONS = ("right", "left", "down", "up")
MOVES = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (d_row, d_col) of actions 0..3, the reference's _action_set
SPLITS = ("train", "test")
VARIANTS = ("emaml", "metods")
WALL_PENALTY = 1e-3
METODS_GOAL_REWARD = 10.0
METODS_HORIZON = 100
OBS_SIZE = 15

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_DOMAIN = 0x6D617A652D676E72  # ASCII "maze-gnr": keeps maze hashes apart from the driver's streams
_PURPOSE_MAZE, _PURPOSE_ROOT, _PURPOSE_START, _PURPOSE_GOAL = 1, 2, 3, 4


# ---------------------------------------------------------------------------------------------------
# Counter-based hashing, vectorized (the same splitmix64 finaliser as core.mix64)


def _mix64_np(x: np.ndarray) -> np.ndarray:
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _below_np(bits: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """Uniform integers in [0, n) from 64 random bits (core.rng_below, vectorized; n < 2**31)."""
    n64 = np.asarray(n).astype(_U64)
    return (((bits >> _U64(32)) * n64) >> _U64(32)).astype(np.int64)


def _base_key(seed: int, split: str, size: int, purpose: int) -> int:
    key = mix64((seed ^ _DOMAIN) & _MASK64)
    key = mix64((key + SPLITS.index(split) + 1) & _MASK64)
    key = mix64((key + size) & _MASK64)
    return mix64((key + purpose) & _MASK64)


def _keys(base: int, index: np.ndarray) -> np.ndarray:
    return _mix64_np(_U64(base) + index.astype(_U64))


# ---------------------------------------------------------------------------------------------------
# Generation


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 5:
        raise ValueError(f"size must be an int >= 5 (the side of the wall grid, border included), got {size!r}")
    if size > 4001:
        raise ValueError(f"size must be at most 4001, got {size}")


def _check_seed(seed: int, what: str) -> int:
    if isinstance(seed, np.integer):
        seed = int(seed)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"{what} must be a non-negative int, got {seed!r}")
    return seed & _MASK64


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def num_free_cells(size: int) -> int:
    """Free squares of every generated maze of this size: n^2 rooms + n^2 - 1 passages."""
    _check_size(size)
    n = (size - 1) // 2
    return 2 * n * n - 1


def _check_variant(variant: str) -> None:
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"variant must be 'emaml' or 'metods', got {variant!r}")


def default_horizon(size: int, *, variant: str = "emaml") -> int:
    """Default episode horizon. E-MAML: the reference's 12 steps for size 10 (31 free squares),
    scaled with the number of free squares for other sizes (62 for size 20). MetODS: 100 steps."""
    _check_variant(variant)
    if variant == "metods":
        _check_size(size)
        return METODS_HORIZON
    return max(1, round(12 * num_free_cells(size) / 31))


def _check_knob(name: str, value, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not np.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def resolve_variant(
    variant: str = "emaml",
    *,
    respawn: bool | None = None,
    goal_reward: float | None = None,
    step_cost: float | None = None,
    wall_penalty: float | None = None,
) -> dict:
    """The rule knobs of a variant, explicit values overriding its preset: a dict with ``respawn``
    (bool), ``goal_reward`` and ``step_cost`` (float, or None for the E-MAML ``1 + c`` and ``c``) and
    ``wall_penalty`` (float). ``"emaml"``: no respawn, E-MAML rewards; ``"metods"``: respawn, goal
    reward 10, no step cost, no wall penalty."""
    _check_variant(variant)
    if respawn is not None and not isinstance(respawn, (bool, np.bool_)):
        raise TypeError(f"respawn must be a bool (or None for the variant's), got {respawn!r}")
    knobs = {
        "respawn": respawn,
        "goal_reward": _check_knob("goal_reward", goal_reward),
        "step_cost": _check_knob("step_cost", step_cost),
        "wall_penalty": _check_knob("wall_penalty", wall_penalty),
    }
    if variant == "metods":
        preset = {"respawn": True, "goal_reward": METODS_GOAL_REWARD, "step_cost": 0.0, "wall_penalty": 0.0}
    else:
        preset = {"respawn": False, "goal_reward": None, "step_cost": None, "wall_penalty": WALL_PENALTY}
    out = {k: preset[k] if v is None else v for k, v in knobs.items()}
    out["respawn"] = bool(out["respawn"])
    return out


def generate_mazes(size: int, num: int, *, seed: int = 0, split: str = "train", first: int = 0) -> np.ndarray:
    """Mazes ``first .. first + num - 1`` of a split, as a bool array ``[num, size, size]`` (True = wall).

    Randomized depth-first search on the ``n x n`` room lattice (``n = (size - 1) // 2``), run in
    lockstep over all mazes: every maze pushes each room once and pops it once, so all searches end
    after exactly ``2 n^2 - 1`` iterations. Draw ``it`` of maze k is a hash of (seed, split, size, k,
    it), so maze k does not depend on ``first`` or ``num``.
    """
    _check_size(size)
    seed = _check_seed(seed, "seed")
    _check_split(split)
    for what, v in (("num", num), ("first", first)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{what} must be a non-negative int, got {v!r}")
    size, num, first = int(size), int(num), int(first)
    n = (size - 1) // 2
    N = n * n
    idx = np.arange(first, first + num, dtype=np.int64)
    keys = _keys(_base_key(seed, split, size, _PURPOSE_MAZE), idx)
    rr, cc = np.divmod(np.arange(N), n)
    # neighbour room of each room per direction (N = outside: a sentinel that counts as visited),
    # and the flat wall-grid index of the passage square towards it
    nbr = np.full((N, 4), N, dtype=np.int64)
    passage = np.zeros((N, 4), dtype=np.int64)
    for k, (dr, dc) in enumerate(MOVES):
        r2, c2 = rr + dr, cc + dc
        inside = (r2 >= 0) & (r2 < n) & (c2 >= 0) & (c2 < n)
        nbr[inside, k] = (r2 * n + c2)[inside]
        passage[:, k] = (2 * rr + 1 + dr) * size + (2 * cc + 1 + dc)
    walls = np.ones((num, size * size), dtype=bool)
    walls[:, (2 * rr + 1) * size + 2 * cc + 1] = False
    if num == 0:
        return walls.reshape(num, size, size)
    rows = np.arange(num)
    visited = np.zeros((num, N + 1), dtype=bool)
    visited[:, N] = True
    stack = np.zeros((num, N), dtype=np.int64)
    sp = np.ones(num, dtype=np.int64)
    root = _below_np(_keys(_base_key(seed, split, size, _PURPOSE_ROOT), idx), N)
    stack[:, 0] = root
    visited[rows, root] = True
    for it in range(2 * N - 1):
        top = stack[rows, sp - 1]
        cand = nbr[top]
        free = ~visited[rows[:, None], cand]
        count = free.sum(axis=1)
        pick = _below_np(_mix64_np(keys + _U64(it)), count)
        choice = np.argmax(free.cumsum(axis=1) > pick[:, None], axis=1)  # the pick-th unvisited neighbour
        push = count > 0
        m, ch, tp = rows[push], choice[push], top[push]
        new = cand[m, ch]
        walls[m, passage[tp, ch]] = False
        visited[m, new] = True
        stack[m, sp[push]] = new
        sp += np.where(push, 1, -1)
    return walls.reshape(num, size, size)


def generate_tasks(
    walls: np.ndarray,
    tasks_per_maze: int,
    *,
    seed: int = 0,
    split: str = "train",
    allow_start_at_goal: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tasks over a pool of generated mazes ``[M, S, S]``: ``(maze, start, goal)`` int32 arrays of
    length ``M * tasks_per_maze``; start and goal are flat indices ``row * S + col`` drawn uniformly
    from the free squares of the maze (distinct unless ``allow_start_at_goal``). Every maze must
    have the same number of free squares (true of generated mazes)."""
    M, S, _ = walls.shape
    flat = walls.reshape(M, S * S)
    counts = (~flat).sum(axis=1)
    F = int(counts[0]) if M else 0
    if M and ((counts != F).any() or F < 2):
        raise ValueError("generate_tasks needs mazes with the same number (>= 2) of free squares")
    free = np.nonzero(~flat)[1].reshape(M, F)
    j = np.arange(M * tasks_per_maze, dtype=np.int64)
    maze = j // tasks_per_maze
    s = _below_np(_keys(_base_key(seed, split, S, _PURPOSE_START), j), F)
    if allow_start_at_goal:
        g = _below_np(_keys(_base_key(seed, split, S, _PURPOSE_GOAL), j), F)
    else:
        g = _below_np(_keys(_base_key(seed, split, S, _PURPOSE_GOAL), j), F - 1)
        g = g + (g >= s)
    return maze.astype(np.int32), free[maze, s].astype(np.int32), free[maze, g].astype(np.int32)


def reward_table(
    horizon: int,
    *,
    goal_reward: float | None = None,
    step_cost: float | None = None,
    wall_penalty: float = WALL_PENALTY,
) -> np.ndarray:
    """The four rewards ``r[2 * at_goal + hit_wall] = goal_reward * at_goal - wall_penalty * hit_wall
    - step_cost``, evaluated left to right in float32 (float32 [4]). Defaults (E-MAML): ``goal_reward
    = 1 + c`` (the float32 sum), ``step_cost = c = 1 / horizon`` (float32), ``wall_penalty = 1e-3``."""
    if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool) or horizon < 1:
        raise ValueError(f"horizon must be a positive int, got {horizon!r}")
    goal_reward = _check_knob("goal_reward", goal_reward)
    step_cost = _check_knob("step_cost", step_cost)
    wall_penalty = _check_knob("wall_penalty", wall_penalty, optional=False)
    c = np.float32(1.0 / horizon)
    one = np.float32(1.0)
    out = np.empty(4, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow to inf is reported below
        gain = one + c if goal_reward is None else np.float32(goal_reward)
        cost = c if step_cost is None else np.float32(step_cost)
        pen = np.float32(wall_penalty)
        for at_goal in (0, 1):
            for hit in (0, 1):
                out[2 * at_goal + hit] = gain * np.float32(at_goal) - pen * np.float32(hit) - cost
    if not (np.isfinite(out).all() and np.isfinite([gain, cost, pen]).all()):
        raise ValueError(
            f"rewards overflow float32: goal_reward={goal_reward}, step_cost={step_cost}, wall_penalty={wall_penalty}"
        )
    return out


def neighbour_codes(walls: np.ndarray) -> np.ndarray:
    """uint8 ``[M, S, S]``: bit k of square (r, c) is the wall bit of the k-th of its 8 neighbours in
    row-major order (the 3x3 patch without its centre: patch index ``k`` for k < 4, ``k + 1``
    otherwise). Border squares, where the agent never stands, see the outside as wall."""
    w = np.pad(np.asarray(walls, dtype=np.uint8), ((0, 0), (1, 1), (1, 1)), constant_values=1)
    S = w.shape[1] - 2
    codes = np.zeros((w.shape[0], S, S), dtype=np.uint8)
    bit = 0
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            codes |= w[:, 1 + dr : 1 + dr + S, 1 + dc : 1 + dc + S] << np.uint8(bit)
            bit += 1
    return codes


# ---------------------------------------------------------------------------------------------------
# The family


def _as_int_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    return a.astype(np.int64)


class MazeFamily(Family):
    """Maze rules over a pool of mazes and tasks.

    Pool: the task tensors ``maze``, ``start``, ``goal`` (int32 ``[T]``; start and goal are flat
    indices ``row * S + col``), returned by ``pool()``, and the wall grids, which the kernels read
    through the task's maze id (never copied per environment) as ``self.codes``: uint8 ``[M, S * S]``
    neighbour codes (``neighbour_codes``: bit k = the k-th square of the 3x3 patch around the square,
    centre skipped), so a step reads one byte for the move and one for the observation.
    ``mazes()`` gives the plain wall grids, which the numpy reference reads. Per-environment state:
    the agent's flat position (int32). With respawn the kernels also read ``free_cells`` (int32
    ``[M, free_stride]``: each maze's free squares in increasing flat order, padded with -1) and
    ``num_free`` (int32 ``[M]``: how many; mazes of ``from_arrays`` may differ); without respawn both
    are empty.

    Args (generated pool): ``size`` (side of the wall grid, >= 5), ``split`` ("train" / "test"),
    ``num_mazes``, ``tasks_per_maze``, ``maze_seed``, ``horizon`` (episode horizon, sets ``c``; default
    ``default_horizon(size, variant=variant)``), ``allow_start_at_goal``, and the rule knobs
    ``variant`` ("emaml" / "metods"), ``respawn``, ``goal_reward``, ``step_cost``, ``wall_penalty``
    (None: the variant's value; see ``resolve_variant`` and the module docstring).
    ``MazeFamily.from_arrays`` builds a family from given wall grids and tasks. A ``BatchedEnv`` built
    on a family directly should use ``max_steps=family.horizon`` (the ``Maze`` factory does), so that
    the time limit is the horizon that sets ``c``.
    """

    name = "maze"
    num_actions = 4
    obs_dtype = torch.float32
    obs_shape = (OBS_SIZE,)

    def __init__(
        self,
        size: int = 10,
        *,
        split: str = "train",
        num_mazes: int = 10000,
        tasks_per_maze: int = 1,
        maze_seed: int = 0,
        horizon: int | None = None,
        allow_start_at_goal: bool = False,
        variant: str = "emaml",
        respawn: bool | None = None,
        goal_reward: float | None = None,
        step_cost: float | None = None,
        wall_penalty: float | None = None,
    ):
        _check_size(size)
        _check_split(split)
        knobs = resolve_variant(
            variant, respawn=respawn, goal_reward=goal_reward, step_cost=step_cost, wall_penalty=wall_penalty
        )
        maze_seed = _check_seed(maze_seed, "maze_seed")
        for what, v in (("num_mazes", num_mazes), ("tasks_per_maze", tasks_per_maze)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{what} must be a positive int, got {v!r}")
        if num_mazes * tasks_per_maze >= 2**31:
            raise ValueError(f"num_mazes * tasks_per_maze must be below 2**31, got {num_mazes * tasks_per_maze}")
        if not isinstance(allow_start_at_goal, (bool, np.bool_)):
            raise TypeError(f"allow_start_at_goal must be a bool, got {allow_start_at_goal!r}")
        walls = generate_mazes(int(size), int(num_mazes), seed=maze_seed, split=split)
        maze, start, goal = generate_tasks(
            walls, int(tasks_per_maze), seed=maze_seed, split=split, allow_start_at_goal=bool(allow_start_at_goal)
        )
        self.split = split
        self.maze_seed = maze_seed
        if horizon is None:
            horizon = default_horizon(int(size), variant=variant)
        self._setup(walls, maze, start, goal, horizon, variant, knobs)

    @classmethod
    def from_arrays(
        cls,
        walls,
        maze,
        start,
        goal,
        *,
        horizon: int,
        variant: str = "emaml",
        respawn: bool | None = None,
        goal_reward: float | None = None,
        step_cost: float | None = None,
        wall_penalty: float | None = None,
    ) -> MazeFamily:
        """A family over given mazes and tasks.

        Args:
            walls: bool or 0/1 integer array ``[M, S, S]`` (True / 1 = wall), S >= 3, with an all-wall
                border.
            maze: int ``[T]`` maze id of each task.
            start, goal: int ``[T, 2]`` (row, col) of each task; must be free squares of its maze.
            horizon: the episode horizon (sets ``c = 1 / horizon``).
            variant, respawn, goal_reward, step_cost, wall_penalty: the rules, as in ``MazeFamily``.
                With respawn, every maze that a task uses needs at least 2 free squares; the mazes may
                have different numbers of free squares.
        """
        knobs = resolve_variant(
            variant, respawn=respawn, goal_reward=goal_reward, step_cost=step_cost, wall_penalty=wall_penalty
        )
        if isinstance(walls, torch.Tensor):
            walls = walls.detach().cpu().numpy()
        w = np.asarray(walls)
        if not (w.dtype == bool or np.issubdtype(w.dtype, np.integer)):
            raise TypeError(f"walls must be a bool or integer array, got dtype {w.dtype}")
        if w.ndim != 3 or w.shape[1] != w.shape[2] or w.shape[1] < 3 or w.shape[0] < 1:
            raise ValueError(f"walls must have shape (M, S, S) with M >= 1 and S >= 3, got {w.shape}")
        if not np.isin(w, (0, 1)).all():
            raise ValueError("walls must hold only 0 (free) and 1 (wall)")
        w = w.astype(bool)
        if not (w[:, 0].all() and w[:, -1].all() and w[:, :, 0].all() and w[:, :, -1].all()):
            raise ValueError("every maze must have an all-wall border (moves are not bounds-checked)")
        M, S, _ = w.shape
        m = _as_int_array(maze, "maze")
        s = _as_int_array(start, "start")
        g = _as_int_array(goal, "goal")
        if m.ndim != 1 or m.shape[0] < 1:
            raise ValueError(f"maze must have shape (T,) with T >= 1, got {m.shape}")
        T = m.shape[0]
        for name, v in (("start", s), ("goal", g)):
            if v.shape != (T, 2):
                raise ValueError(f"{name} must have shape ({T}, 2) of (row, col), got {v.shape}")
            if (v < 0).any() or (v >= S).any():
                raise ValueError(f"{name} cells must lie on the {S}x{S} grid")
        if (m < 0).any() or (m >= M).any():
            raise ValueError(f"maze ids must lie in [0, {M})")
        for name, v in (("start", s), ("goal", g)):
            if w[m, v[:, 0], v[:, 1]].any():
                k = int(np.argmax(w[m, v[:, 0], v[:, 1]]))
                raise ValueError(f"{name} of task {k} ({tuple(v[k])}) is a wall square of maze {m[k]}")
        fam = cls.__new__(cls)
        fam.split = None
        fam.maze_seed = None
        fam._setup(w, m, s[:, 0] * S + s[:, 1], g[:, 0] * S + g[:, 1], horizon, variant, knobs)
        return fam

    def _setup(self, walls: np.ndarray, maze, start, goal, horizon, variant: str, knobs: dict) -> None:
        if not isinstance(horizon, (int, np.integer)) or isinstance(horizon, bool) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        M, S, _ = walls.shape
        self.size = int(S)
        self.horizon = int(horizon)
        self.variant = variant
        self.respawn = bool(knobs["respawn"])
        self.rewards = reward_table(
            self.horizon,
            goal_reward=knobs["goal_reward"],
            step_cost=knobs["step_cost"],
            wall_penalty=knobs["wall_penalty"],
        )
        # the knobs as used (float32 values; the E-MAML defaults resolved)
        c = np.float32(1.0 / self.horizon)
        gain = np.float32(1.0) + c if knobs["goal_reward"] is None else np.float32(knobs["goal_reward"])
        self.goal_reward = float(gain)
        self.step_cost = float(c if knobs["step_cost"] is None else np.float32(knobs["step_cost"]))
        self.wall_penalty = float(np.float32(knobs["wall_penalty"]))
        flat = walls.reshape(M, S * S)
        self._walls_np = np.ascontiguousarray(flat.astype(np.uint8))
        if self.respawn:
            counts = (~flat).sum(axis=1)
            used = np.unique(np.asarray(maze))
            if (counts[used] < 2).any():
                k = int(used[np.argmax(counts[used] < 2)])
                raise ValueError(
                    f"respawn needs at least 2 free squares (the goal and another) in every maze a task uses; "
                    f"maze {k} has {int(counts[k])}"
                )
            stride = int(counts.max())
            order = np.argsort(flat, axis=1, kind="stable")[:, :stride]  # free squares first, in flat order
            free = np.where(np.arange(stride) < counts[:, None], order, -1)
            self._free_np = np.ascontiguousarray(free.astype(np.int32))
            self._nfree_np = counts.astype(np.int32)
        else:
            self._free_np = np.zeros((0, 0), dtype=np.int32)
            self._nfree_np = np.zeros(0, dtype=np.int32)
        self.free_stride = int(self._free_np.shape[1])
        self.free_cells = torch.from_numpy(self._free_np.copy())
        self.num_free = torch.from_numpy(self._nfree_np.copy())
        self.codes = torch.from_numpy(neighbour_codes(walls).reshape(M, S * S))
        self.maze = torch.as_tensor(np.asarray(maze, dtype=np.int32)).contiguous()
        self.start = torch.as_tensor(np.asarray(start, dtype=np.int32)).contiguous()
        self.goal = torch.as_tensor(np.asarray(goal, dtype=np.int32)).contiguous()
        # patch offsets in row-major order: 3 * (dr + 1) + (dc + 1)
        self._patch = np.array([dr * S + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)], dtype=np.int64)

    # -- pool -------------------------------------------------------------------------------------

    @property
    def num_mazes(self) -> int:
        return int(self._walls_np.shape[0])

    def mazes(self) -> np.ndarray:
        """The wall grids as a bool array ``[M, S, S]``."""
        return self._walls_np.reshape(-1, self.size, self.size).astype(bool)

    def task_cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(maze [T], start [T, 2], goal [T, 2])`` with (row, col) cells."""
        S = self.size
        s, g = self.start.cpu().numpy(), self.goal.cpu().numpy()
        return self.maze.cpu().numpy(), np.stack(divmod(s, S), axis=1), np.stack(divmod(g, S), axis=1)

    def state_spec(self):
        return {"pos": StateSpec((), torch.int32)}

    def pool(self):
        return {"maze": self.maze, "start": self.start, "goal": self.goal}

    def to(self, device):
        self.codes = self.codes.to(device)
        self.maze = self.maze.to(device)
        self.start = self.start.to(device)
        self.goal = self.goal.to(device)
        self.free_cells = self.free_cells.to(device)
        self.num_free = self.num_free.to(device)

    def kernel_args(self, state):
        tensors = [state["pos"], self.maze, self.start, self.goal, self.codes, self.free_cells, self.num_free]
        return tensors, [self.size, int(self.respawn), self.free_stride], [float(r) for r in self.rewards]

    # -- numpy reference (cpp/envs/maze.h) ---------------------------------------------------------

    def ref_reset(self, S, P, i, task, rng):
        S.pos[i] = P.start[task]

    def ref_step(self, S, P, i, task, action, reward, rng):
        walls = self._walls_np[int(P.maze[task])]
        dr, dc = MOVES[int(action[0])]
        pos = int(S.pos[i])
        nxt = pos + dr * self.size + dc
        hit = bool(walls[nxt])
        if not hit:
            pos = nxt
        goal = int(P.goal[task])
        at_goal = pos == goal
        if self.respawn and at_goal:
            pos = self._respawn_square(int(P.maze[task]), goal, rng)
        S.pos[i] = pos
        reward[0] = self.rewards[2 * int(at_goal) + int(hit)]
        return at_goal and not self.respawn

    def _respawn_square(self, m: int, goal: int, bits: int) -> int:
        """A uniformly random free square of maze m other than the goal, from 64 random bits."""
        row, n = self._free_np[m], int(self._nfree_np[m])
        cell = int(row[rng_below(bits, n - 1)])
        return int(row[n - 1]) if cell == goal else cell

    def ref_observe(self, S, P, i, task, out, ctx):
        out[:] = 0
        out[0] = np.float32(ctx.new_episode)
        out[1] = np.float32(ctx.prev_reward)
        if ctx.prev_action >= 0:
            out[2 + ctx.prev_action] = 1
        walls = self._walls_np[int(P.maze[task])]
        out[6:] = walls[int(S.pos[i]) + self._patch]

    # -- gymnasium, rendering -----------------------------------------------------------------------

    def single_observation_space(self):
        import gymnasium

        low = np.zeros(OBS_SIZE, dtype=np.float32)
        high = np.ones(OBS_SIZE, dtype=np.float32)
        low[1] = min(0.0, float(self.rewards.min()))
        high[1] = max(0.0, float(self.rewards.max()))
        return gymnasium.spaces.Box(low, high, shape=(OBS_SIZE,), dtype=np.float32)

    def render_rgb(self, S, P, i, task, cell: int = 12):
        n = self.size
        walls = self._walls_np[int(P.maze[task])].reshape(n, n)
        img = np.where(walls[..., None] == 1, np.uint8(40), np.uint8(235)).astype(np.uint8)
        img = np.repeat(img, 3, axis=2)
        for flat, colour in (
            (int(P.start[task]), (70, 170, 80)),  # start: green
            (int(P.goal[task]), (240, 190, 20)),  # goal: gold
            (int(S.pos[i]), (30, 90, 220)),  # agent: blue (drawn last)
        ):
            img[flat // n, flat % n] = colour
        return np.repeat(np.repeat(img, cell, axis=0), cell, axis=1)


def Maze(
    num_envs: int,
    *,
    size: int = 10,
    split: str = "train",
    num_mazes: int = 10000,
    tasks_per_maze: int = 1,
    maze_seed: int = 0,
    allow_start_at_goal: bool = False,
    max_steps: int | None = None,
    episodes_per_trial: int | None = None,
    variant: str = "emaml",
    respawn: bool | None = None,
    goal_reward: float | None = None,
    step_cost: float | None = None,
    wall_penalty: float | None = None,
    **kwargs,
) -> BatchedEnv:
    """A batch of maze environments (functional API; rules in the module docstring).

    ``size`` is the side of the wall grid (10 and 20 are the reference's; 20 is the paper's), ``split``
    picks the train or test mazes, ``num_mazes`` / ``tasks_per_maze`` / ``maze_seed`` shape the task
    pool, ``max_steps`` is the episode horizon (time limit and ``c = 1 / max_steps``; default
    ``default_horizon(size, variant=variant)``: 12 for size 10, 62 for size 20, 100 for MetODS),
    ``episodes_per_trial`` the episodes played in one task (default 5, the reference's ``n_episodes``;
    1 for MetODS).

    ``variant="emaml"`` (default) is E-MAML's maze: the goal ends the episode, reward ``1`` there,
    ``-c`` per step and ``-c - 0.001`` per wall hit. ``variant="metods"`` is MetODS' maze (Chalvidal et
    al. 2022; Miconi et al.'s Grid Maze): reward 10 on the goal, after which the agent is re-placed
    at a uniformly random free square other than the goal and the episode goes on to its 100-step time
    limit; no step cost and no wall penalty (MetODS' random agent collects a non-negative 3.8 +- 8.9 in
    100 steps, so its wall penalty is 0 or negligible). ``Maze(n, size=14, split="test",
    variant="metods")`` (or ``size=20``) evaluates on larger unseen mazes. The knobs override the
    variant's preset: ``respawn`` (bool), ``goal_reward`` (the reward on the goal is ``goal_reward -
    step_cost``), ``step_cost``, ``wall_penalty`` (finite floats; None: the variant's value).

    Other keyword arguments go to ``BatchedEnv`` (``explore_episodes=3`` for E-RL2, ``seed``,
    ``device``, ``autoreset_mode``, ...).
    """
    _check_variant(variant)
    if max_steps is None:
        _check_size(size)
        max_steps = default_horizon(int(size), variant=variant)
    if not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps (the episode horizon) must be a positive int, got {max_steps!r}")
    if episodes_per_trial is None:
        episodes_per_trial = 1 if variant == "metods" else 5
    family = MazeFamily(
        size,
        split=split,
        num_mazes=num_mazes,
        tasks_per_maze=tasks_per_maze,
        maze_seed=maze_seed,
        horizon=int(max_steps),
        allow_start_at_goal=allow_start_at_goal,
        variant=variant,
        respawn=respawn,
        goal_reward=goal_reward,
        step_cost=step_cost,
        wall_penalty=wall_penalty,
    )
    return BatchedEnv(family, num_envs, max_steps=int(max_steps), episodes_per_trial=episodes_per_trial, **kwargs)
