"""The environment driver shared by every family (cpp/envs/env_driver.h, metakern/envs/core.py):
time limits, trials, task draws, the three autoreset modes, validation, and the gymnasium front
ends. GridNavi is the family used here (its own rules are tested in test_env_gridnavi.py)."""

import gymnasium
import metakern.envs  # registers the gymnasium ids
import numpy as np
import pytest
import torch
from metakern.envs import BatchedEnv, GridNavi
from metakern.envs.core import mix64, rng_below, rng_key
from metakern.envs.registration import ENV_IDS

MODES = ["next_step", "same_step", "disabled"]


def _run(backend, mode, steps=120, B=12, seed=5, **kw):
    env = GridNavi(
        B,
        size=5,
        max_steps=7,
        episodes_per_trial=3,
        explore_episodes=1,
        seed=seed,
        backend=backend,
        autoreset_mode=mode,
        **kw,
    )
    g = torch.Generator().manual_seed(seed)
    log = [env.observe().clone()]
    for _ in range(steps):
        a = torch.randint(0, 5, (B,), generator=g, dtype=torch.int32)
        r = env.step(a)
        done = r.terminated | r.truncated
        entry = [r.obs, r.reward, r.terminated, r.truncated] + [
            r.info[k] for k in ("episode", "explore", "trial_done", "task")
        ]
        if "final_obs" in r.info:
            entry.append(torch.where(done[:, None], r.info["final_obs"], torch.zeros_like(r.obs)))
        log.extend(t.clone() for t in entry)
        log.extend(v.clone() for v in env.bk.values())
        if mode == "disabled" and done.any():
            log.append(env.reset(done).clone())
    return log


@pytest.mark.parametrize("mode", MODES)
def test_cpp_matches_reference_exactly(mode):
    ref = _run("reference", mode)
    cpp = _run("cpp", mode)
    assert len(ref) == len(cpp)
    for k, (x, y) in enumerate(zip(ref, cpp, strict=True)):
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert torch.equal(x, y), f"entry {k} differs"


def test_rng_helpers_match_the_documented_constants():
    # splitmix64 of 0 (a published test vector of the finaliser applied to the first increment)
    assert mix64(0) == 0xE220A8397B1DCDAF
    bits = rng_key(1, 2, 3, 1)
    assert 0 <= rng_below(bits, 7) < 7
    assert 0 <= bits < 2**64


def _trajectory_flags(mode, steps=40):
    env = GridNavi(2, size=5, max_steps=4, episodes_per_trial=2, explore_episodes=1, autoreset_mode=mode, seed=3)
    a = torch.full((2,), 2, dtype=torch.int32)
    rows = []
    for _ in range(steps):
        r = env.step(a)
        rows.append(
            (
                r.terminated[0].item(),
                r.truncated[0].item(),
                r.info["episode"][0].item(),
                r.info["explore"][0].item(),
                r.info["trial_done"][0].item(),
                r.reward[0].item(),
                r,
            )
        )
        if mode == "disabled" and (r.terminated | r.truncated).any():
            env.reset(r.terminated | r.truncated)
    return env, rows


def test_next_step_autoreset_resets_on_the_following_call_and_ignores_the_action():
    _env, rows = _trajectory_flags("next_step", steps=12)
    # steps 1-4: episode 0 (truncated at 4), call 5: reset step, steps 6-9: episode 1, call 10: reset
    truncs = [k for k, r in enumerate(rows) if r[1]]
    assert truncs == [3, 8]
    reset_call = rows[4]
    assert reset_call[0] is False and reset_call[1] is False and reset_call[5] == 0.0
    assert reset_call[6].obs[0].tolist() == [0.0, 0.0]  # the start cell: the action (right) was ignored
    # the reset call already belongs to the episode it starts (its observation is that episode's first)
    assert [r[2] for r in rows[:10]] == [0] * 4 + [1] * 5 + [0]
    assert [r[3] for r in rows[:10]] == [True] * 4 + [False] * 5 + [True]  # episode 0 is exploratory
    assert rows[8][4] is True and rows[3][4] is False  # the trial ends with its second episode


def test_same_step_autoreset_returns_final_obs_and_the_reset_obs():
    _env, rows = _trajectory_flags("same_step", steps=8)
    r = rows[3][6]
    assert bool(r.truncated[0])
    assert r.info["final_obs"][0].tolist() == [4.0, 0.0]  # moved right 4 times on a 5x5 grid
    assert r.obs[0].tolist() == [0.0, 0.0]
    # the next episode starts at once: no reset call in between
    assert rows[4][2] == 1 and not rows[4][0] and rows[4][6].obs[0].tolist() == [1.0, 0.0]


def test_disabled_autoreset_refuses_to_step_a_finished_env_and_steps_nothing():
    env = GridNavi(3, size=5, max_steps=2, autoreset_mode="disabled")
    a = torch.tensor([2, 1, 0], dtype=torch.int32)
    env.step(a)
    r = env.step(a)
    assert r.truncated.all()
    before = {k: v.clone() for k, v in env.state.items()}
    with pytest.raises(RuntimeError, match="autoreset is disabled"):
        env.step(a)
    assert all(torch.equal(before[k], env.state[k]) for k in before)
    env.reset(torch.tensor([True, False, True]))
    with pytest.raises(RuntimeError, match="env 1"):
        env.step(a)
    env.reset(torch.tensor([False, True, False]))
    env.step(a)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_bad_actions_raise_and_step_nothing(backend):
    env = GridNavi(4, backend=backend)
    env.step(torch.full((4,), 2, dtype=torch.int32))
    before = {k: v.clone() for k, v in {**env.state, **env.bk}.items()}
    for bad, err in [
        (torch.tensor([0, 1, 5, 2], dtype=torch.int32), ValueError),
        (torch.tensor([0, -1, 2, 2]), ValueError),
        (torch.tensor([0, 2**32 + 1, 2, 2]), ValueError),  # would wrap to 1 if narrowed blindly
        (torch.zeros(3, dtype=torch.int32), ValueError),
        (torch.zeros((4, 1), dtype=torch.int32), ValueError),
        (torch.zeros(4), TypeError),
        ([0, 1, 2, 3], TypeError),
    ]:
        with pytest.raises(err):
            env.step(bad)
    after = {**env.state, **env.bk}
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="env 2"):
        env.step(torch.tensor([0, 1, 9, 2], dtype=torch.int32))


def test_tasks_are_drawn_from_the_range_and_set_tasks_checks_ids():
    env = GridNavi(64, size=7, split="all", task_range=(10, 20), episodes_per_trial=1, max_steps=3)
    assert ((env.tasks >= 10) & (env.tasks < 20)).all()
    for _ in range(9):
        env.step(torch.zeros(64, dtype=torch.int32))
    assert ((env.tasks >= 10) & (env.tasks < 20)).all()
    assert len(set(env.tasks.tolist())) > 5
    obs = env.set_tasks(3)
    assert (env.tasks == 3).all() and (obs == 0).all()
    env.set_tasks(torch.tensor([7, 8]), mask=torch.arange(64) < 2)
    assert env.tasks[:3].tolist() == [7, 8, 3]
    n = env.family.num_tasks()
    with pytest.raises(ValueError, match=f"unknown task id {n}"):
        env.set_tasks(n)
    with pytest.raises(ValueError, match="unknown task id -1"):
        env.set_tasks(-1)
    with pytest.raises(TypeError):
        env.set_tasks(1.5)
    with pytest.raises(TypeError, match="tasks must be an int or an integer tensor, got NoneType"):
        env.set_tasks(None)
    with pytest.raises(ValueError, match="tasks is a meta tensor"):
        env.set_tasks(torch.zeros(64, dtype=torch.int64, device="meta"))
    with pytest.raises(ValueError, match="mask is a meta tensor"):
        env.reset(torch.ones(64, dtype=torch.bool, device="meta"))
    with pytest.raises(ValueError, match="task_range"):
        GridNavi(2, task_range=(0, 10**6))


def test_set_tasks_keeps_the_task_across_trials_when_not_resampling():
    env = GridNavi(4, size=5, max_steps=2, episodes_per_trial=1, resample_tasks=False)
    env.set_tasks(torch.tensor([1, 2, 3, 4]))
    for _ in range(10):
        env.step(torch.zeros(4, dtype=torch.int32))
    assert env.tasks.tolist() == [1, 2, 3, 4]


def test_seeding_is_reproducible_and_seed_dependent():
    def tasks(seed):
        env = GridNavi(32, split="all", seed=seed, episodes_per_trial=1, max_steps=1)
        out = [env.tasks.clone()]
        for _ in range(4):
            env.step(torch.zeros(32, dtype=torch.int32))
            out.append(env.tasks.clone())
        return torch.stack(out)

    assert torch.equal(tasks(1), tasks(1))
    assert not torch.equal(tasks(1), tasks(2))


def test_prev_action_and_reward_and_new_episode_flags():
    env = GridNavi(1, size=5, max_steps=2, episodes_per_trial=2, autoreset_mode="same_step")
    assert env.prev_action.item() == -1 and env.new_episode.item() == 1
    env.step(torch.tensor([2], dtype=torch.int32))
    assert env.prev_action.item() == 2 and env.prev_reward.item() == pytest.approx(-0.1) and env.new_episode.item() == 0
    env.step(torch.tensor([1], dtype=torch.int32))  # episode 0 ends; episode 1 of the trial starts
    assert env.prev_action.item() == 1 and env.new_episode.item() == 1
    env.step(torch.tensor([1], dtype=torch.int32))
    env.step(torch.tensor([1], dtype=torch.int32))  # trial ends: inputs restart
    assert env.prev_action.item() == -1 and env.prev_reward.item() == 0.0


def test_constructor_validation():
    fam = metakern.envs.GridNaviFamily(5)
    for kwargs, err in [
        ({"num_envs": 0}, ValueError),
        ({"num_envs": 2, "max_steps": -1}, ValueError),
        ({"num_envs": 2, "episodes_per_trial": 0}, ValueError),
        ({"num_envs": 2, "explore_episodes": 3}, ValueError),
        ({"num_envs": 2, "autoreset_mode": "sometimes"}, ValueError),
        ({"num_envs": 2, "seed": -1}, ValueError),
        ({"num_envs": 2, "backend": "gpu"}, ValueError),
    ]:
        n = kwargs.pop("num_envs")
        with pytest.raises(err):
            BatchedEnv(fam, n, **kwargs)
    with pytest.raises(ValueError):
        env = BatchedEnv(fam, 2)
        env.reset(torch.tensor([True]))
    with pytest.raises(TypeError):
        BatchedEnv(fam, 2).reset(torch.tensor([1, 0]))


# --- gymnasium ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_make_vec_all_autoreset_modes(mode):
    env = gymnasium.make_vec("metakern/GridNavi5x5-v0", num_envs=3, autoreset_mode=mode)
    assert env.metadata["autoreset_mode"].name == mode.upper()
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 2) and env.observation_space.contains(obs)
    seen_done = False
    for _ in range(40):
        obs, rew, term, trunc, info = env.step(env.action_space.sample())
        assert rew.shape == (3,) and term.dtype == np.bool_ and info["_episode"].all()
        done = term | trunc
        if done.any():
            seen_done = True
            if mode == "same_step":
                assert info["_final_obs"].tolist() == done.tolist()
                assert all(info["final_obs"][i] is not None for i in np.flatnonzero(done))
            if mode == "disabled":
                env.reset(options={"reset_mask": done})
    assert seen_done
    env.close()


def test_vector_env_reset_options():
    env = gymnasium.make_vec("metakern/GridNavi-v0", num_envs=4)
    env.reset(seed=1)
    env.reset(options={"tasks": np.array([0, 1, 2, 3])})
    assert env.unwrapped.env.tasks.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        env.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
    with pytest.raises(ValueError):
        env.reset(options={"colour": 1})


@pytest.mark.parametrize("env_id", list(ENV_IDS))
def test_single_env_passes_gymnasium_env_checker(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(env_id, render_mode="rgb_array", disable_env_checker=True)
    check_env(env.unwrapped)  # with its render check
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.any()


def test_single_gridnavi_steps():
    env = gymnasium.make("metakern/GridNavi-v0", disable_env_checker=True)
    obs, _ = env.reset(seed=0)
    obs, r, _term, _trunc, _ = env.step(2)
    assert isinstance(r, float) and obs.tolist() == [1.0, 0.0]
    for _ in range(40):
        obs, r, term, trunc, _info = env.step(0)
        if term or trunc:
            break
    assert trunc
    env.reset()  # the next episode of the trial


def test_render_and_gif(tmp_path):
    env = gymnasium.make_vec("metakern/GridNavi-v0", num_envs=2, render_mode="rgb_array")
    env.reset(seed=0)
    frames = env.render()
    assert len(frames) == 2 and frames[0].dtype == np.uint8 and frames[0].shape[2] == 3
    pytest.importorskip("PIL")
    path = metakern.envs.record_episode(GridNavi(2), path=tmp_path / "ep.gif")
    from PIL import Image

    with Image.open(path) as im:
        assert im.n_frames > 1
