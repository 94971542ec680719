"""E-MAML mazes (metakern/envs/maze.py, cpp/envs/maze.h): backends against the reference, rules on
handcrafted mazes, maze and task generation, bad input."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
from metakern import _backend
from metakern.envs import BatchedEnv
from metakern.envs.maze import (
    MOVES,
    Maze,
    MazeFamily,
    default_horizon,
    generate_mazes,
    generate_tasks,
    neighbour_codes,
    num_free_cells,
    resolve_variant,
    reward_table,
)

needs_cpp = pytest.mark.skipif(
    _backend.unavailable_reason("cpp", "cpu") is not None or not hasattr(_backend.cpp_module(), "maze_step"),
    reason="the C++ module has no maze kernel",
)


def _backends():
    out = ["reference"]
    if _backend.unavailable_reason("cpp", "cpu") is None and hasattr(_backend.cpp_module(), "maze_step"):
        out.append("cpp")
    return out


# ---------------------------------------------------------------------------------------------------
# compiled backends against the reference

CONFIGS = {
    "size10": dict(size=10, num_mazes=40, max_steps=12),
    "size11_start_at_goal": dict(size=11, num_mazes=30, tasks_per_maze=2, allow_start_at_goal=True, max_steps=9),
    "size20_test": dict(size=20, split="test", num_mazes=20, tasks_per_maze=3, max_steps=40),
    "size5_short": dict(size=5, num_mazes=10, max_steps=3, maze_seed=5),
}


def _same(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert torch.equal(a, b), what


def _run_pair(ref, other, T, B, seed, device="cpu"):
    return _run_pair_counts(ref, other, T, B, seed, device)[:2]


def _run_pair_counts(ref, other, T, B, seed, device="cpu", policy=None):
    """Step both envs in lockstep (random actions, or ``policy(ref, generator)``), comparing everything;
    returns (episode ends, terminations, steps that reached the goal)."""
    _same(ref.reset(), other.reset().cpu(), "reset obs")
    g = torch.Generator().manual_seed(seed)
    ends = terms = goals = 0
    goal_rewards = torch.from_numpy(ref.family.rewards[2:].copy())
    for t in range(T):
        a = torch.randint(0, 4, (B,), generator=g, dtype=torch.int32) if policy is None else policy(ref, g)
        if ref.autoreset_mode.name == "DISABLED":
            done = ref.bk["status"] == 2
            if done.any():
                _same(ref.reset(done), other.reset(done.to(device)).cpu(), f"masked reset at {t}")
        r1, r2 = ref.step(a), other.step(a.to(device))
        for k, (x, y) in enumerate(zip(tuple(r1)[:4], tuple(r2)[:4], strict=True)):
            _same(x, y.cpu(), f"step {t} output {k}")
        assert r1.info.keys() == r2.info.keys()
        for key in r1.info:
            x, y = r1.info[key], r2.info[key].cpu()
            if key == "final_obs":
                ended = r1.terminated | r1.truncated
                x, y = x[ended], y[ended]
            _same(x, y, f"info[{key}] at {t}")
        _same(ref.state["pos"], other.state["pos"].cpu(), f"pos at {t}")
        ends += int((r1.terminated | r1.truncated).sum())
        terms += int(r1.terminated.sum())
        goals += int(torch.isin(r1.reward, goal_rewards).sum())
    _same(ref.observe(), other.observe().cpu(), "observe")
    tasks = torch.arange(B, dtype=torch.int32) % ref.family.num_tasks()
    _same(ref.set_tasks(tasks), other.set_tasks(tasks.to(device)).cpu(), "set_tasks")
    return ends, terms, goals


@needs_cpp
@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cpp_matches_reference(name, mode):
    B, T = 24, 150
    kw = dict(CONFIGS[name], episodes_per_trial=3, explore_episodes=1, autoreset_mode=mode, seed=11)
    ref, cpp = Maze(B, backend="reference", **kw), Maze(B, backend="cpp", **kw)
    ends, terms = _run_pair(ref, cpp, T, B, seed=len(name))
    assert ends > 0 and (terms > 0 or name == "size20_test")  # random walks rarely solve size 20


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
def test_cuda_matches_reference(mode):
    B, T = 64, 150
    kw = dict(CONFIGS["size10"], episodes_per_trial=3, explore_episodes=1, autoreset_mode=mode, seed=3)
    ref = Maze(B, backend="reference", **kw)
    gpu = Maze(B, backend="cuda", device="cuda", **kw)
    ends, terms = _run_pair(ref, gpu, T, B, seed=5, device=gpu.device)
    assert ends > 0 and terms > 0


# ---------------------------------------------------------------------------------------------------
# rules on handcrafted mazes

#   #####
#   #S.G#     S (1, 1), G (1, 3)
#   #.#.#
#   #...#
#   #####
ROOM = np.array(
    [
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1],
        [1, 0, 1, 0, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ],
    dtype=bool,
)
RIGHT, LEFT, DOWN, UP = 0, 1, 2, 3


def _room_env(backend, *, horizon=12, start=(1, 1), goal=(1, 3), B=1, **kw):
    fam = MazeFamily.from_arrays(ROOM[None], [0], [start], [goal], horizon=horizon)
    kw.setdefault("resample_tasks", False)
    return BatchedEnv(fam, B, max_steps=horizon, backend=backend, **kw)


def _act(env, *actions):
    return env.step(torch.tensor(actions, dtype=torch.int32))


@pytest.mark.parametrize("backend", _backends())
def test_moves_walls_rewards_and_goal(backend):
    env = _room_env(backend, horizon=12, episodes_per_trial=2)
    table = reward_table(12)
    c = np.float32(1 / 12)
    obs = env.reset()
    # start of a trial: new episode, no reward, no previous action; walls around (1, 1)
    assert obs[0].tolist() == [1, 0, 0, 0, 0, 0, *[1, 1, 1, 1, 0, 0, 1, 0, 1]]
    r = _act(env, LEFT)  # into the wall: stay, penalty
    assert int(env.state["pos"][0]) == 1 * 5 + 1
    assert r.reward[0].item() == table[1] == np.float32(-c - np.float32(1e-3))
    assert r.obs[0].tolist()[:6] == [0, table[1], 0, 1, 0, 0]
    r = _act(env, UP)  # wall again
    assert r.reward[0].item() == table[1] and not r.terminated[0]
    r = _act(env, RIGHT)  # free: (1, 2)
    assert int(env.state["pos"][0]) == 1 * 5 + 2
    assert r.reward[0].item() == table[0] == -c
    assert r.obs[0].tolist() == [0, table[0], 1, 0, 0, 0, *[1, 1, 1, 0, 0, 0, 0, 1, 0]]
    r = _act(env, RIGHT)  # the goal: terminates with (1 + c) - c
    assert r.terminated[0] and not r.truncated[0] and not r.info["trial_done"][0]
    assert r.reward[0].item() == table[2] == pytest.approx(1.0, abs=1e-6)
    assert r.obs[0].tolist() == [0, table[2], 1, 0, 0, 0, *[1, 1, 1, 0, 0, 1, 1, 0, 1]]
    # next-step autoreset: back to the same start; prev action / reward carry over within the trial
    r = _act(env, DOWN)
    assert int(env.state["pos"][0]) == 6 and r.reward[0].item() == 0 and not r.terminated[0]
    assert r.obs[0].tolist()[:6] == [1, table[2], 1, 0, 0, 0]
    assert int(r.info["episode"][0]) == 1 and int(env.episode[0]) == 1
    for a in (DOWN, DOWN, RIGHT, RIGHT, UP, UP):
        r = _act(env, a)
    assert r.terminated[0] and r.info["trial_done"][0]
    r = _act(env, LEFT)  # a new trial: previous action and reward cleared
    assert r.obs[0].tolist()[:6] == [1, 0, 0, 0, 0, 0] and int(env.episode[0]) == 0


@pytest.mark.parametrize("backend", _backends())
def test_time_limit_truncates_with_the_horizon(backend):
    env = _room_env(backend, horizon=3, episodes_per_trial=5)
    table = reward_table(3)
    env.reset()
    for t in range(3):
        r = _act(env, UP)
        assert r.reward[0].item() == table[1]
        assert bool(r.truncated[0]) == (t == 2) and not r.terminated[0]
    assert table[0] == -np.float32(1 / 3) and table[1] == -np.float32(1 / 3) - np.float32(1e-3)


@pytest.mark.parametrize("backend", _backends())
def test_start_on_the_goal_needs_a_step(backend):
    env = _room_env(backend, start=(1, 1), goal=(1, 1), B=2)
    table = reward_table(12)
    env.reset()
    r = _act(env, UP, RIGHT)  # env 0 bumps a wall and stays on the goal; env 1 walks away
    assert r.terminated.tolist() == [True, False]
    assert r.reward.tolist() == [table[3], table[0]]
    assert table[3] == np.float32(1 + np.float32(1 / 12)) - np.float32(1e-3) - np.float32(1 / 12)


@pytest.mark.parametrize("backend", _backends())
def test_every_env_sees_its_previous_action(backend):
    # the reference writes the one-hot into row 0 only (obs[np.arange(1), 2 + actions]); not here
    env = _room_env(backend, B=4)
    env.reset()
    r = _act(env, RIGHT, LEFT, DOWN, UP)
    assert torch.equal(r.obs[:, 2:6], torch.eye(4))


@pytest.mark.parametrize("backend", _backends())
def test_same_step_autoreset_and_final_obs(backend):
    env = _room_env(backend, autoreset_mode="same_step", episodes_per_trial=2)
    env.reset()
    _act(env, RIGHT)
    r = _act(env, RIGHT)
    assert r.terminated[0]
    assert r.info["final_obs"][0, 6:].tolist() == [1, 1, 1, 0, 0, 1, 1, 0, 1]  # seen on the goal
    assert r.obs[0, :2].tolist() == [1, r.reward[0].item()]  # the next episode's first observation
    assert r.obs[0, 6:].tolist() == [1, 1, 1, 1, 0, 0, 1, 0, 1]  # back at the start
    assert int(env.state["pos"][0]) == 6


def test_walls_are_read_from_the_task_maze():
    # two mazes that differ next to the start: the step reads the wall grid of the task's maze
    other = ROOM.copy()
    other[1, 2] = True
    fam = MazeFamily.from_arrays(np.stack([ROOM, other]), [0, 1], [(1, 1), (1, 1)], [(3, 3), (3, 3)], horizon=5)
    for backend in _backends():
        env = BatchedEnv(fam, 2, max_steps=5, backend=backend, resample_tasks=False)
        env.set_tasks(torch.tensor([0, 1]))
        r = _act(env, RIGHT, RIGHT)
        assert env.state["pos"].tolist() == [7, 6]
        assert r.reward.tolist() == [reward_table(5)[0], reward_table(5)[1]]


# ---------------------------------------------------------------------------------------------------
# generation


def _is_perfect_maze(w: np.ndarray) -> bool:
    """Connected, and as many free-square adjacencies as free squares minus one (a tree)."""
    free = ~w
    edges = int((free[:, 1:] & free[:, :-1]).sum() + (free[1:] & free[:-1]).sum())
    cells = list(zip(*np.nonzero(free), strict=True))
    seen = {cells[0]}
    queue = deque([cells[0]])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            q = (r + dr, c + dc)
            if free[q] and q not in seen:
                seen.add(q)
                queue.append(q)
    return len(seen) == len(cells) and edges == len(cells) - 1


@pytest.mark.parametrize("size", [5, 6, 10, 11, 20, 31])
def test_generated_mazes_are_perfect(size):
    mazes = generate_mazes(size, 40, seed=2)
    n = (size - 1) // 2
    assert mazes.shape == (40, size, size) and mazes.dtype == bool
    assert mazes[:, 0].all() and mazes[:, -1].all() and mazes[:, :, 0].all() and mazes[:, :, -1].all()
    assert num_free_cells(size) == 2 * n * n - 1
    assert ((~mazes).sum(axis=(1, 2)) == 2 * n * n - 1).all()
    assert all(_is_perfect_maze(m) for m in mazes)
    if size % 2 == 0:  # the extra wall row and column of even sizes
        assert mazes[:, size - 2].all() and mazes[:, :, size - 2].all()
    assert len({m.tobytes() for m in mazes}) >= (30 if size >= 10 else 4)  # random layouts (2x2 rooms: 4 trees)


def test_maze_k_is_a_pure_function_of_seed_split_size_and_k():
    full = generate_mazes(20, 12, seed=9)
    assert np.array_equal(generate_mazes(20, 5, seed=9, first=7), full[7:12])
    assert np.array_equal(generate_mazes(20, 12, seed=9), full)
    assert not np.array_equal(generate_mazes(20, 12, seed=10), full)
    train = {m.tobytes() for m in generate_mazes(20, 300, split="train")}
    test = {m.tobytes() for m in generate_mazes(20, 300, split="test")}
    assert train.isdisjoint(test) and len(train) == len(test) == 300


def test_neighbour_codes_hold_the_3x3_patch():
    walls = generate_mazes(11, 6, seed=4)
    codes = neighbour_codes(walls)
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]
    for r in range(1, 10):
        for c in range(1, 10):
            for k, (dr, dc) in enumerate(offsets):
                assert np.array_equal((codes[:, r, c] >> k) & 1, walls[:, r + dr, c + dc])


def test_tasks_and_pool():
    fam = MazeFamily(10, num_mazes=50, tasks_per_maze=4, maze_seed=3)
    assert fam.num_tasks() == 200 and fam.num_mazes == 50 and fam.horizon == 12
    maze, start, goal = fam.task_cells()
    assert maze.tolist() == [j // 4 for j in range(200)]
    walls = fam.mazes()
    assert not walls[maze, start[:, 0], start[:, 1]].any() and not walls[maze, goal[:, 0], goal[:, 1]].any()
    assert (start != goal).any(axis=1).all()
    again = MazeFamily(10, num_mazes=50, tasks_per_maze=4, maze_seed=3)
    assert all(torch.equal(a, b) for a, b in zip(fam.pool().values(), again.pool().values(), strict=True))
    assert np.array_equal(fam.mazes(), again.mazes()) and torch.equal(fam.codes, again.codes)
    test = MazeFamily(10, split="test", num_mazes=50, tasks_per_maze=4, maze_seed=3)
    assert not np.array_equal(fam.mazes(), test.mazes())
    # start == goal only when allowed (7 free squares: about one task in seven)
    w = generate_mazes(5, 100)
    _, s, g = generate_tasks(w, 1, allow_start_at_goal=True)
    assert (s == g).any()
    _, s, g = generate_tasks(w, 1)
    assert (s != g).all()


def test_defaults_and_spaces():
    assert default_horizon(10) == 12 and default_horizon(20) == 62
    env = Maze(3, num_mazes=20)
    assert env.max_steps == 12 and env.episodes_per_trial == 5 and env.family.size == 10
    assert env.num_actions == 4 and env.obs_shape == (15,)
    env20 = Maze(2, size=20, num_mazes=5, max_steps=100)
    assert env20.max_steps == env20.family.horizon == 100
    unseen = Maze(2, size=30, split="test", num_mazes=5)  # a larger size for evaluation: same observation
    assert unseen.obs_shape == (15,) and unseen.max_steps == default_horizon(30) == 151
    space = env.family.single_observation_space()
    obs = env.reset()
    assert obs.dtype == torch.float32 and all(space.contains(o.numpy()) for o in obs)
    r = env.step(torch.zeros(3, dtype=torch.int32))
    assert all(space.contains(o.numpy()) for o in r.obs)


def test_render_rgb():
    env = _room_env("reference")
    env.reset()
    S, bk, P = env._numpy_views()
    img = env.family.render_rgb(S, P, 0, int(bk.task[0]), cell=4)
    assert img.shape == (20, 20, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (40, 40, 40)  # wall
    assert tuple(img[4 * 3 + 1, 4 * 3 + 1]) == (235, 235, 235)  # free
    assert tuple(img[4 * 1 + 1, 4 * 3 + 1]) == (240, 190, 20)  # goal
    assert tuple(img[4 * 1 + 1, 4 * 1 + 1]) == (30, 90, 220)  # the agent, on the start


# ---------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("backend", _backends())
def test_bad_actions_raise_and_step_nothing(backend):
    env = Maze(8, num_mazes=10, backend=backend)
    env.reset()
    env.step(torch.ones(8, dtype=torch.int32))
    before = (env.state["pos"].clone(), {k: v.clone() for k, v in env.bk.items()})
    for bad in (4, -1, 2**32 + 1):
        a = torch.zeros(8, dtype=torch.int64)
        a[5] = bad
        with pytest.raises(ValueError, match="out of range"):
            env.step(a)
        assert torch.equal(env.state["pos"], before[0])
        assert all(torch.equal(v, before[1][k]) for k, v in env.bk.items())


def test_constructor_validation():
    with pytest.raises(ValueError, match="size"):
        MazeFamily(4)
    with pytest.raises(ValueError, match="size"):
        Maze(2, size=7.0)
    with pytest.raises(ValueError, match="split"):
        MazeFamily(10, split="valid")
    with pytest.raises(ValueError, match="num_mazes"):
        MazeFamily(10, num_mazes=0)
    with pytest.raises(ValueError, match="tasks_per_maze"):
        MazeFamily(10, tasks_per_maze=0)
    with pytest.raises(ValueError, match="maze_seed"):
        MazeFamily(10, maze_seed=-1)
    with pytest.raises(ValueError, match="horizon"):
        MazeFamily(10, num_mazes=2, horizon=0)
    with pytest.raises(TypeError, match="allow_start_at_goal"):
        MazeFamily(10, allow_start_at_goal=1)
    with pytest.raises(ValueError, match="max_steps"):
        Maze(2, max_steps=0)
    open_border = ROOM.copy()
    open_border[0, 2] = False
    with pytest.raises(ValueError, match="border"):
        MazeFamily.from_arrays(open_border[None], [0], [(1, 1)], [(1, 3)], horizon=5)
    with pytest.raises(ValueError, match="wall square"):
        MazeFamily.from_arrays(ROOM[None], [0], [(2, 2)], [(1, 3)], horizon=5)
    with pytest.raises(ValueError, match="maze ids"):
        MazeFamily.from_arrays(ROOM[None], [1], [(1, 1)], [(1, 3)], horizon=5)
    with pytest.raises(ValueError, match="shape"):
        MazeFamily.from_arrays(ROOM[None], [0], [(1, 1, 1)], [(1, 3)], horizon=5)
    with pytest.raises(TypeError, match="integer"):
        MazeFamily.from_arrays(ROOM[None], [0], [(1.0, 1.0)], [(1, 3)], horizon=5)
    with pytest.raises(ValueError, match="0 \\(free\\) and 1"):
        MazeFamily.from_arrays(ROOM[None].astype(int) * 2, [0], [(1, 1)], [(1, 3)], horizon=5)


# ---------------------------------------------------------------------------------------------------
# the MetODS variant: respawn on the goal, reward knobs, the preset


def _oracle_actions(fam) -> torch.Tensor:
    """int32 [T, S * S]: an action along a shortest path to the task's goal from every free square
    (distances by relaxation, vectorized over tasks)."""
    maze, _, goal = fam.task_cells()
    walls = fam.mazes()[maze]
    T, S, _ = walls.shape
    big = 10**6
    dist = np.full((T, S, S), big, dtype=np.int64)
    dist[np.arange(T), goal[:, 0], goal[:, 1]] = 0
    while True:
        p = np.pad(dist, ((0, 0), (1, 1), (1, 1)), constant_values=big)
        nbr = np.stack([p[:, 1 + dr : 1 + dr + S, 1 + dc : 1 + dc + S] for dr, dc in MOVES], axis=-1)
        new = np.where(walls, big, np.minimum(dist, nbr.min(axis=-1) + 1))
        if np.array_equal(new, dist):
            break
        dist = new
    p = np.pad(dist, ((0, 0), (1, 1), (1, 1)), constant_values=big)
    nbr = np.stack([p[:, 1 + dr : 1 + dr + S, 1 + dc : 1 + dc + S] for dr, dc in MOVES], axis=-1)
    return torch.from_numpy(nbr.argmin(axis=-1).reshape(T, S * S).astype(np.int32))


def _mixed_policy(table: torch.Tensor, p_oracle: float):
    """Shortest-path actions with probability p_oracle, else uniform: reaches the goal often."""

    def policy(env, g):
        pos, task = env.state["pos"].cpu().long(), env.tasks.cpu().long()
        oracle = table[task, pos]
        rand = torch.randint(0, 4, oracle.shape, generator=g, dtype=torch.int32)
        return torch.where(torch.rand(oracle.shape, generator=g) < p_oracle, oracle, rand)

    return policy


RESPAWN_CONFIGS = {
    "metods_size5": (dict(size=5, num_mazes=10, variant="metods", max_steps=40, maze_seed=2), 0.0),
    "metods_size10": (dict(size=10, num_mazes=30, variant="metods", max_steps=50, episodes_per_trial=2), 0.6),
    "metods_size20_test": (dict(size=20, split="test", num_mazes=10, tasks_per_maze=2, variant="metods"), 0.8),
    "emaml_respawn_size7": (
        dict(size=7, num_mazes=10, tasks_per_maze=2, allow_start_at_goal=True, respawn=True, max_steps=25),
        0.3,
    ),
}


@needs_cpp
@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
@pytest.mark.parametrize("name", list(RESPAWN_CONFIGS))
def test_cpp_matches_reference_with_respawn(name, mode):
    B, T = 24, 120
    cfg, p_oracle = RESPAWN_CONFIGS[name]
    kw = dict(cfg, explore_episodes=0, autoreset_mode=mode, seed=len(name) + len(mode))
    ref, cpp = Maze(B, backend="reference", **kw), Maze(B, backend="cpp", **kw)
    assert ref.family.respawn
    policy = _mixed_policy(_oracle_actions(ref.family), p_oracle) if p_oracle > 0 else None
    ends, terms, goals = _run_pair_counts(ref, cpp, T, B, seed=len(name), policy=policy)
    assert goals >= 10 and terms == 0  # the goal is reached many times and never terminates
    assert ends == B * (T // ref.max_steps) or mode == "next_step"  # only the time limit ends episodes


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
def test_cuda_matches_reference_with_respawn(mode):
    B, T = 64, 120
    cfg, p_oracle = RESPAWN_CONFIGS["metods_size10"]
    kw = dict(cfg, autoreset_mode=mode, seed=7)
    ref = Maze(B, backend="reference", **kw)
    gpu = Maze(B, backend="cuda", device="cuda", **kw)
    policy = _mixed_policy(_oracle_actions(ref.family), p_oracle)
    ends, terms, goals = _run_pair_counts(ref, gpu, T, B, seed=5, device=gpu.device, policy=policy)
    assert goals >= 10 and terms == 0 and ends > 0


@pytest.mark.parametrize("backend", _backends())
def test_respawn_lands_on_a_free_non_goal_square_and_runs_to_the_time_limit(backend):
    B = 32
    env = Maze(B, size=10, num_mazes=16, variant="metods", backend=backend, seed=4)
    fam = env.family
    assert env.max_steps == 100 and env.episodes_per_trial == 1
    oracle = _oracle_actions(fam)
    walls = fam.mazes().reshape(fam.num_mazes, -1)
    env.reset()
    total = torch.zeros(B)
    respawned = 0
    for t in range(100):
        pos = env.state["pos"].long()
        goal = fam.goal[env.tasks.long()].long()
        assert (pos != goal).all()  # the agent never stays on the goal
        task = env.tasks.clone()
        r = env.step(oracle[task.long(), pos])  # always the shortest path: reaches the goal again and again
        assert not r.terminated.any() and bool(r.truncated.all()) == (t == 99)
        assert set(r.reward.tolist()) <= {0.0, 10.0}
        total += r.reward
        hit = r.reward == 10
        respawned += int(hit.sum())
        if t < 99:
            new = env.state["pos"].long()
            m = fam.maze[task.long()].long()
            assert not walls[m, new].any() and (new != goal).all()
            assert torch.equal(hit, new != _oracle_next(pos, oracle[task.long(), pos], fam.size))
            # the observation already shows the 3x3 patch of the new square, and the reward
            for i in torch.nonzero(hit).flatten().tolist():
                S = fam.size
                r0, c0 = divmod(int(new[i]), S)
                patch = fam.mazes()[m[i], r0 - 1 : r0 + 2, c0 - 1 : c0 + 2].reshape(-1)
                assert r.obs[i, 6:].tolist() == patch.astype(np.float32).tolist()
                assert r.obs[i, :2].tolist() == [0.0, 10.0]
    # a perfect agent returns to the goal many times: mean shortest path in a size-10 maze is ~9 steps
    assert (total >= 30).all() and respawned == int(total.sum() / 10)
    # the episode was the trial: the next step resets with a new task, cleared inputs
    r = env.step(torch.zeros(B, dtype=torch.int32))
    assert (r.obs[:, :6] == torch.tensor([1, 0, 0, 0, 0, 0])).all() and (r.reward == 0).all()


def _oracle_next(pos: torch.Tensor, action: torch.Tensor, S: int) -> torch.Tensor:
    """The square a (never blocked) shortest-path move leads to."""
    delta = torch.tensor([1, -1, S, -S])
    return pos + delta[action.long()]


# the 5x5 room: free squares in flat order (1, 1) (1, 2) (1, 3) (2, 1) (2, 3) (3, 1) (3, 2) (3, 3)
ROOM_FREE = [6, 7, 8, 11, 13, 16, 17, 18]


def _chi2(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("start,goal", [((1, 2), (1, 3)), ((3, 2), (3, 3))])  # goal inside / last of the list
def test_respawn_is_uniform_over_the_other_free_squares(backend, start, goal):
    B = 2800 if backend == "reference" else 14000
    fam = MazeFamily.from_arrays(ROOM[None], [0], [start], [goal], horizon=10, variant="metods")
    env = BatchedEnv(fam, B, max_steps=10, backend=backend, resample_tasks=False, seed=12)
    r = _act(env, *([RIGHT] * B))  # every env steps onto the goal and is re-placed
    assert (r.reward == 10).all() and not r.terminated.any()
    pos = env.state["pos"].numpy().copy()
    others = [c for c in ROOM_FREE if c != goal[0] * 5 + goal[1]]
    counts = np.array([(pos == c).sum() for c in others])
    assert counts.sum() == B and (counts > 0).all()
    assert _chi2(counts) < 35  # 6 degrees of freedom: p < 1e-5 for a uniform draw
    # the next episode of the trial draws afresh (its step counter goes on); a new trial repeats the draw
    env.reset(new_trial=False)
    _act(env, *([RIGHT] * B))
    assert (env.state["pos"].numpy() != pos).mean() > 0.7
    env.set_tasks(0)
    _act(env, *([RIGHT] * B))
    assert np.array_equal(env.state["pos"].numpy(), pos)


@needs_cpp
def test_respawn_is_uniform_in_a_generated_maze():
    walls = generate_mazes(10, 1, seed=6)[0]
    free = np.flatnonzero(~walls.reshape(-1))
    # a goal with a free square on its left, where the agent starts: one step RIGHT reaches the goal
    goal = next(int(c) for c in free if not walls.reshape(-1)[c - 1])
    fam = MazeFamily.from_arrays(
        walls[None], [0], [divmod(goal - 1, 10)], [divmod(goal, 10)], horizon=100, variant="metods"
    )
    assert fam.num_free.tolist() == [31] and fam.free_cells[0].tolist() == free.tolist()
    B = 31 * 600
    env = BatchedEnv(fam, B, max_steps=100, backend="cpp", resample_tasks=False, seed=1)
    _act(env, *([RIGHT] * B))
    pos = env.state["pos"].numpy().copy()
    counts = np.array([(pos == c).sum() for c in free if c != goal])
    assert counts.sum() == B and len(counts) == 30
    assert _chi2(counts) < 75  # 29 degrees of freedom: p < 1e-5 for a uniform draw
    # the same through the reference, on the first envs
    ref = BatchedEnv(fam, 300, max_steps=100, backend="reference", resample_tasks=False, seed=1)
    _act(ref, *([RIGHT] * 300))
    assert np.array_equal(ref.state["pos"].numpy(), pos[:300])


def test_respawn_with_mazes_of_different_free_counts():
    small = ROOM.copy()
    small[3, 1:3] = True  # 6 free squares: (1, 1) (1, 2) (1, 3) (2, 1) (2, 3) (3, 3)
    one = np.ones((5, 5), dtype=bool)
    one[1, 1] = False  # a single free square: unused by any task, so allowed
    w = np.stack([ROOM, small, one])
    fam = MazeFamily.from_arrays(w, [0, 1], [(1, 2), (1, 2)], [(1, 3), (1, 3)], horizon=8, variant="metods")
    assert fam.num_free.tolist() == [8, 6, 1] and fam.free_stride == 8
    assert fam.free_cells[1].tolist() == [6, 7, 8, 11, 13, 18, -1, -1]
    envs = [BatchedEnv(fam, 400, max_steps=8, backend=b, resample_tasks=False, seed=3) for b in _backends()]
    tasks = torch.arange(400) % 2
    for env in envs:
        env.set_tasks(tasks)
        r = _act(env, *([RIGHT] * 400))
        assert (r.reward == 10).all()
        pos = env.state["pos"]
        assert set(pos[tasks == 0].tolist()) == set(ROOM_FREE) - {8}
        assert set(pos[tasks == 1].tolist()) == {6, 7, 11, 13, 18}
    for env in envs[1:]:
        assert torch.equal(env.state["pos"], envs[0].state["pos"])
    with pytest.raises(ValueError, match="at least 2 free squares"):
        MazeFamily.from_arrays(w, [2], [(1, 1)], [(1, 1)], horizon=8, variant="metods")
    # without respawn a single free square is fine, and no free-square table is built
    fam = MazeFamily.from_arrays(w, [2], [(1, 1)], [(1, 1)], horizon=8)
    assert fam.free_cells.numel() == 0 and fam.num_free.numel() == 0


@pytest.mark.parametrize("backend", _backends())
def test_metods_rewards_on_the_room(backend):
    fam = MazeFamily.from_arrays(ROOM[None], [0], [(1, 1)], [(1, 3)], horizon=100, variant="metods")
    env = BatchedEnv(fam, 1, max_steps=100, backend=backend, resample_tasks=False)
    env.reset()
    r = _act(env, LEFT)  # a wall: no penalty in MetODS
    assert r.reward.tolist() == [0.0] and int(env.state["pos"][0]) == 6
    r = _act(env, RIGHT)
    assert r.reward.tolist() == [0.0] and r.obs[0, :2].tolist() == [0.0, 0.0]
    r = _act(env, RIGHT)  # the goal: 10, and somewhere else
    assert r.reward.tolist() == [10.0] and not r.terminated[0] and not r.truncated[0]
    assert int(env.state["pos"][0]) in set(ROOM_FREE) - {8}
    # explicit knobs override the preset: a wall penalty and a step cost, no respawn
    fam = MazeFamily.from_arrays(
        ROOM[None],
        [0],
        [(1, 1)],
        [(1, 3)],
        horizon=100,
        variant="metods",
        wall_penalty=0.5,
        step_cost=0.25,
        respawn=False,
    )
    env = BatchedEnv(fam, 1, max_steps=100, backend=backend, resample_tasks=False)
    env.reset()
    assert _act(env, LEFT).reward.tolist() == [-0.75]
    assert _act(env, RIGHT).reward.tolist() == [-0.25]
    r = _act(env, RIGHT)
    assert r.reward.tolist() == [9.75] and r.terminated[0] and int(env.state["pos"][0]) == 8


def test_metods_preset_and_overrides():
    env = Maze(2, num_mazes=5, variant="metods")
    fam = env.family
    assert env.max_steps == fam.horizon == 100 and env.episodes_per_trial == 1
    assert fam.variant == "metods" and fam.respawn
    assert (fam.goal_reward, fam.step_cost, fam.wall_penalty) == (10.0, 0.0, 0.0)
    assert fam.rewards.tolist() == [0.0, 0.0, 10.0, 10.0] and fam.rewards.dtype == np.float32
    assert fam.num_free.tolist() == [31] * 5 and fam.free_stride == 31
    space = fam.single_observation_space()
    assert space.high[1] == 10 and space.low[1] == 0
    # overrides
    env = Maze(2, num_mazes=5, variant="metods", wall_penalty=0.01, max_steps=50, episodes_per_trial=3)
    assert env.max_steps == 50 and env.episodes_per_trial == 3 and env.family.horizon == 50
    f32 = np.float32
    assert env.family.rewards.tolist() == [0.0, -f32(0.01), 10.0, f32(10) - f32(0.01)]
    assert not Maze(2, num_mazes=5, variant="metods", respawn=False).family.respawn
    assert Maze(2, num_mazes=5, variant="metods", goal_reward=-2).family.rewards.tolist() == [0, 0, -2, -2]
    emaml = Maze(2, num_mazes=5, respawn=True)  # E-MAML rewards and horizon, with respawn
    assert emaml.family.respawn and emaml.max_steps == 12 and emaml.episodes_per_trial == 5
    assert np.array_equal(emaml.family.rewards, reward_table(12))
    assert resolve_variant("metods", step_cost=1) == dict(
        respawn=True, goal_reward=10.0, step_cost=1.0, wall_penalty=0.0
    )
    # larger unseen mazes for evaluation
    for size in (14, 20):
        env = Maze(8, size=size, split="test", num_mazes=10, variant="metods")
        assert env.max_steps == 100 and env.obs_shape == (15,) and env.family.respawn
        assert env.family.num_free.tolist() == [num_free_cells(size)] * 10
        env.reset()
        for _ in range(3):
            r = env.step(torch.randint(0, 4, (8,), dtype=torch.int32))
        assert r.obs.shape == (8, 15)


# reward_table before the knobs existed, as float32 bit patterns [plain, hit, goal, goal + hit]
EMAML_TABLES = {
    1: (0xBF800000, 0xBF8020C5, 0x3F800000, 0x3F7FBE76),
    3: (0xBEAAAAAB, 0xBEAB2DBD, 0x3F800000, 0x3F7FBE76),
    12: (0xBDAAAAAB, 0xBDACB6F5, 0x3F800000, 0x3F7FBE77),
    62: (0xBC842108, 0xBC8C522F, 0x3F800000, 0x3F7FBE76),
    100: (0xBC23D70A, 0xBC343958, 0x3F800000, 0x3F7FBE76),
    151: (0xBBD901B2, 0xBBF9C64E, 0x3F800000, 0x3F7FBE77),
}


@pytest.mark.parametrize("horizon", list(EMAML_TABLES))
def test_default_reward_table_is_unchanged(horizon):
    bits = tuple(int(b) for b in reward_table(horizon).view(np.uint32))
    assert bits == EMAML_TABLES[horizon]
    c = np.float32(1 / horizon)
    explicit = reward_table(horizon, goal_reward=float(np.float32(1) + c), step_cost=float(c), wall_penalty=1e-3)
    assert tuple(int(b) for b in explicit.view(np.uint32)) == EMAML_TABLES[horizon]


def test_defaults_stay_emaml():
    env = Maze(2, num_mazes=5)
    fam = env.family
    assert fam.variant == "emaml" and not fam.respawn and env.episodes_per_trial == 5 and env.max_steps == 12
    assert tuple(int(b) for b in fam.rewards.view(np.uint32)) == EMAML_TABLES[12]
    assert fam.free_cells.numel() == 0 and fam.free_stride == 0
    assert fam.goal_reward == np.float32(1) + np.float32(1 / 12) and fam.step_cost == np.float32(1 / 12)
    assert fam.wall_penalty == np.float32(1e-3)
    assert default_horizon(10, variant="metods") == 100 and default_horizon(20, variant="emaml") == 62


def test_knob_validation():
    for bad in ("MetODS", "maml", None, 1):
        with pytest.raises(ValueError, match="variant"):
            Maze(2, num_mazes=2, variant=bad)
        with pytest.raises(ValueError, match="variant"):
            MazeFamily(10, num_mazes=2, variant=bad)
    with pytest.raises(ValueError, match="variant"):
        default_horizon(10, variant="x")
    for bad in (1, 0, "yes", np.float32(1)):
        with pytest.raises(TypeError, match="respawn"):
            MazeFamily(10, num_mazes=2, respawn=bad)
    for knob in ("goal_reward", "step_cost", "wall_penalty"):
        for bad in (float("nan"), float("inf"), -np.inf):
            with pytest.raises(ValueError, match=knob):
                MazeFamily(10, num_mazes=2, **{knob: bad})
        for bad in ("1", True, [1.0]):
            with pytest.raises(TypeError, match=knob):
                MazeFamily.from_arrays(ROOM[None], [0], [(1, 1)], [(1, 3)], horizon=5, **{knob: bad})
        with pytest.raises(ValueError, match="overflow float32"):
            MazeFamily(10, num_mazes=2, **{knob: 1e39})
        # any finite value is a rule: negative penalties and costs are bonuses
        fam = MazeFamily(10, num_mazes=2, **{knob: -0.5})
        assert np.isfinite(fam.rewards).all()
    with pytest.raises(ValueError, match="horizon"):
        reward_table(0)
    # validation happens before any maze is generated (a huge pool would take long)
    with pytest.raises(TypeError, match="respawn"):
        Maze(2, num_mazes=10**9, respawn="no")
