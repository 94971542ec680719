"""Harlow task (metakern/envs/harlow.py, cpp/envs/harlow.h): compiled backends against the numpy
reference, the rules, what memoryless and remembering policies earn, the task pool, bad input,
gymnasium."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from env_testing import assert_same_step, run_lockstep
from metakern import _backend
from metakern.envs import Harlow, HarlowFamily
from metakern.envs.harlow import harlow_values

MODES = ("next_step", "same_step", "disabled")
HAS_CPP = _backend.unavailable_reason("cpp", "cpu") is None and hasattr(_backend.cpp_module(), "harlow_step")
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="the C++ module has no harlow kernel")
BACKENDS = ["reference"] + (["cpp"] if HAS_CPP else [])


def _act(env, *actions):
    return env.step(torch.tensor(actions, dtype=torch.int32))


# ---------------------------------------------------------------------------------------------------
# compiled backends against the reference

CONFIGS = {
    "default": dict(),
    "wide_no_fixation": dict(width=4, fixation_steps=0, presentations=3, empty_reward=-0.25),
    "long_fixation": dict(width=3, fixation_steps=2, presentations=2, reward=2.5, empty_reward=0.5),
    "truncated": dict(max_steps=7),  # the time limit cuts the 10-step episode
}


@needs_cpp
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cpp_matches_reference(name, mode):
    def make(backend):
        return Harlow(
            29,
            num_tasks=40,
            episodes_per_trial=3,
            explore_episodes=1,
            autoreset_mode=mode,
            seed=7 + len(name),
            backend=backend,
            **CONFIGS[name],
        )

    ref, cpp = make("reference"), make("cpp")
    run_lockstep(ref, cpp, 120, seed=len(name))
    assert int(ref.bk["trial"].min()) >= 1  # every env has played whole trials, with new tasks drawn
    tasks = torch.arange(29, dtype=torch.int32) % 40
    assert torch.equal(ref.set_tasks(tasks), cpp.set_tasks(tasks))
    g = torch.Generator().manual_seed(3)
    for _ in range(30):
        a = torch.randint(0, ref.num_actions, (29,), generator=g, dtype=torch.int32)
        ra, rc = ref.step(a), cpp.step(a)
        assert_same_step(ra, rc)
        if mode == "disabled" and bool((ra.terminated | ra.truncated).any()):
            done = ra.terminated | ra.truncated
            assert torch.equal(ref.reset(done), cpp.reset(done))


@needs_cpp
def test_cpp_matches_reference_task_range_and_fixed_tasks():
    kw = dict(num_tasks=30, task_range=(10, 20), seed=123, episodes_per_trial=2)
    run_lockstep(Harlow(300, backend="reference", **kw), Harlow(300, backend="cpp", **kw), 45, seed=9)
    kw = dict(num_tasks=5, resample_tasks=False, seed=4, autoreset_mode="same_step")
    run_lockstep(Harlow(17, backend="reference", **kw), Harlow(17, backend="cpp", **kw), 40, seed=2)


@pytest.mark.cuda
def test_cuda_matches_reference():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    kw = dict(num_tasks=40, episodes_per_trial=2, autoreset_mode="same_step", seed=5, width=3)
    run_lockstep(Harlow(64, backend="reference", **kw), Harlow(64, backend="cuda", device="cuda", **kw), 60, seed=1)


# ---------------------------------------------------------------------------------------------------
# rules


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_episode_by_hand(backend):
    env = Harlow(1, backend=backend, num_tasks=8, resample_tasks=False)
    env.set_tasks(3)
    va, vb = env.family.values[3].tolist()
    assert abs(va - vb) >= 0.2 - 1e-6
    obs = env.observe()
    assert obs.tolist() == [[1.0, 0.0, 0.0]]  # fixation
    ret = 0.0
    for k in range(5):
        r = _act(env, k % 2)  # a fixation step: any action, reward 0
        assert r.reward.item() == 0.0 and not r.terminated.item()
        line = r.obs[0].tolist()
        pa, pb = int(env.state["pa"][0]), int(env.state["pb"][0])
        assert line[0] == 0.0 and pa != pb and sorted((pa, pb)) == [0, 1]
        assert line[1 + pa] == va and line[1 + pb] == vb
        pick = pa if k % 2 == 0 else pb  # right, wrong, right, wrong, right
        r = _act(env, pick)
        assert r.reward.item() == (1.0 if pick == pa else -1.0)
        ret += r.reward.item()
        assert r.terminated.item() == (k == 4) and not r.truncated.item()
        assert r.obs[0].tolist() == [1.0, 0.0, 0.0]  # the next fixation (or the terminal screen)
    assert ret == 1.0 and int(env.bk["t"][0]) == 10 == env.family.episode_length


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_cells_no_fixation_and_reward_scale(backend):
    env = Harlow(
        64,
        backend=backend,
        width=4,
        fixation_steps=0,
        presentations=3,
        reward=2.0,
        empty_reward=-0.5,
        num_tasks=20,
        seed=2,
    )
    obs = env.observe()
    assert (obs[:, 0] == 0).all() and ((obs[:, 1:] > 0).sum(dim=1) == 2).all()  # a choice at once
    for step in range(3):
        pa, pb = env.state["pa"].long(), env.state["pb"].long()
        empty = next(c for c in range(4) if c not in (int(pa[0]), int(pb[0])))
        a = torch.where(torch.arange(64) % 3 == 0, pa, torch.where(torch.arange(64) % 3 == 1, pb, -1))
        # env 0 takes an empty cell, the others the rewarded / other object / any empty cell
        third = (torch.arange(4)[None, :] != pa[:, None]) & (torch.arange(4)[None, :] != pb[:, None])
        a = torch.where(a < 0, third.float().argmax(dim=1), a)
        a[0] = empty
        r = env.step(a.to(torch.int32))
        want = torch.where(a == pa, 2.0, torch.where(a == pb, -2.0, -0.5))
        assert torch.equal(r.reward, want)
        assert bool(r.terminated.all()) == (step == 2)


def test_positions_are_permuted_within_and_across_episodes():
    env = Harlow(2000, width=3, seed=11)
    placements = []
    for t in range(10):
        r = env.step(torch.zeros(2000, dtype=torch.int32))
        if t % 2 == 0:  # the step entered a choice step
            placements.append((env.state["pa"] * 3 + env.state["pb"]).clone())
    p = torch.stack(placements)  # [5 presentations, B]
    counts = torch.bincount(p.flatten(), minlength=9).tolist()
    assert counts[0] == counts[4] == counts[8] == 0  # pa != pb
    for c in (counts[1], counts[2], counts[3], counts[5], counts[6], counts[7]):
        assert abs(c / 10000 - 1 / 6) < 0.02  # uniform over the 6 ordered placements
    changed = (p[1:] != p[:-1]).float().mean().item()
    assert abs(changed - 5 / 6) < 0.03  # a fresh draw per presentation
    assert r.terminated.all()
    # width 2: both orders occur, for the first and for later presentations
    env = Harlow(500, seed=1)
    firsts = env.state["pa"].clone()
    env.step(torch.zeros(500, dtype=torch.int32))
    env.step(torch.zeros(500, dtype=torch.int32))
    env.step(torch.zeros(500, dtype=torch.int32))
    seconds = env.state["pa"]
    for pa in (firsts, seconds):
        assert 0.4 < pa.float().mean().item() < 0.6


def _play(env, policy, episodes: int = 1) -> torch.Tensor:
    """Total reward of each env over ``episodes`` episodes (one trial each, next-step autoreset)."""
    B = env.num_envs
    obs = env.reset()
    total = torch.zeros(B)
    memory = torch.full((B,), -1.0)  # the rewarded object's value, once known
    ended = 0
    while ended < episodes:
        a = policy(obs, memory)
        r = env.step(a)
        choice = obs[:, 0] == 0
        if bool(choice.any()):
            seen = obs[:, 1:]
            chosen = seen.gather(1, a.long()[:, None])[:, 0]
            other = seen.gather(1, 1 - a.long()[:, None])[:, 0]  # width 2: the other cell
            learnt = torch.where(r.reward > 0, chosen, other)
            memory = torch.where(choice & (memory < 0), learnt, memory)
        total += r.reward
        obs = r.obs
        if bool(r.terminated.any()):
            assert bool(r.terminated.all())
            ended += 1
            memory.fill_(-1.0)
            obs = env.step(torch.zeros(B, dtype=torch.int32)).obs  # the NEXT_STEP reset
    return total


def test_memoryless_policies_earn_zero_and_remembering_earns_four():
    B = 8192
    g = torch.Generator().manual_seed(0)

    def random_policy(obs, memory):
        return torch.randint(0, 2, (obs.shape[0],), generator=g, dtype=torch.int32)

    def larger_value(obs, memory):  # memoryless, uses the values: still 0 (the coin hides the reward)
        return obs[:, 1:].argmax(dim=1).to(torch.int32)

    def oracle(obs, memory):  # first choice at random, then the object that paid (or the other one)
        guess = torch.randint(0, 2, (obs.shape[0],), generator=g, dtype=torch.int32)
        known = (obs[:, 1:] == memory[:, None]).float().argmax(dim=1).to(torch.int32)
        return torch.where(memory >= 0, known, guess)

    ret_random = _play(Harlow(B, seed=1), random_policy, episodes=2) / 2
    ret_larger = _play(Harlow(B, seed=2), larger_value)
    ret_oracle = _play(Harlow(B, seed=3), oracle)
    # std of a mean over B episodes: random sqrt(5 / 2B) ~ 0.017, larger-value sqrt(5 / B) ~ 0.025
    assert abs(ret_random.mean().item()) < 0.1
    assert abs(ret_larger.mean().item()) < 0.12
    assert abs(ret_oracle.mean().item() - 4.0) < 0.06  # std 1 / sqrt(B) ~ 0.011
    assert set(ret_oracle.unique().tolist()) == {3.0, 5.0}  # only the first choice can be wrong


def test_trials_keep_the_task_and_new_trials_draw_new_ones():
    env = Harlow(256, episodes_per_trial=3, num_tasks=1000, seed=5)
    tasks0 = env.tasks.clone()
    seen = []
    for _ in range(3 * 11):
        r = env.step(torch.zeros(256, dtype=torch.int32))
        seen.append((r.info["task"].clone(), r.info["episode"].clone(), r.info["trial_done"].clone()))
    # steps 0-9, 11-20, 22-31: the three episodes; 10 and 21: the next-step resets
    task_steps = torch.stack([s[0] for s in seen])
    assert bool((task_steps[:32] == tasks0).all())  # three episodes (and their resets) in one task
    assert [int(s[1][0]) for s in seen[:33]] == [0] * 10 + [1] * 11 + [2] * 11 + [0]
    assert not any(bool(s[2].any()) for s in seen[:31]) and bool(seen[31][2].all())  # trial done
    assert (task_steps[32] != tasks0).float().mean().item() > 0.9  # a new pair for the new trial


# ---------------------------------------------------------------------------------------------------
# task pool


def test_task_pool_is_deterministic_and_splits_are_disjoint():
    v = harlow_values(4)
    # pinned: the pool is a pure function of (task_seed, split, index), the same on every machine
    pinned = [[0.4719877541065216, 0.9690284729003906], [0.9240394830703735, 0.17849136888980865]]
    np.testing.assert_array_equal(v[:2], np.array(pinned, np.float32))
    train = HarlowFamily().values.numpy()
    test = HarlowFamily(split="test").values.numpy()
    assert train.shape == (10000, 2) and test.shape == (1000, 2) and train.dtype == np.float32
    np.testing.assert_array_equal(train[:4], v)
    np.testing.assert_array_equal(harlow_values(50, first=30), train[30:80])  # independent of pool length
    np.testing.assert_array_equal(HarlowFamily(num_tasks=10).values.numpy(), train[:10])
    assert not np.array_equal(HarlowFamily(num_tasks=10, task_seed=1).values.numpy(), train[:10])
    as_set = lambda a: {tuple(row) for row in a.tolist()}  # noqa: E731
    assert as_set(train).isdisjoint(as_set(test)) and len(as_set(train)) == 10000
    for pool in (train, test):
        assert pool.min() >= np.float32(0.1) and pool.max() <= np.float32(1.0)
        assert np.abs(pool[:, 0] - pool[:, 1]).min() >= np.float32(0.2) - 1e-6
    # symmetric: the rewarded object is the larger one half of the time, same mean value
    assert abs((train[:, 0] > train[:, 1]).mean() - 0.5) < 0.02
    assert abs(train[:, 0].mean() - train[:, 1].mean()) < 0.01
    custom = harlow_values(2000, value_low=2.0, value_high=3.0, min_gap=0.9, task_seed=3)
    assert custom.min() >= 2.0 and custom.max() <= 3.0
    assert np.abs(custom[:, 0] - custom[:, 1]).min() >= np.float32(0.9) - 1e-6
    exact = harlow_values(10, value_low=0.5, value_high=1.5, min_gap=1.0)  # the gap fills the range
    assert set(np.unique(exact).tolist()) == {0.5, 1.5}


def test_defaults_and_spaces():
    env = Harlow(3)
    fam = env.family
    assert env.num_actions == 2 and env.obs_shape == (3,) and fam.num_tasks() == 10000
    assert env.episodes_per_trial == 1 and env.max_steps == 0 and fam.episode_length == 10
    assert Harlow(2, split="test").family.num_tasks() == 1000
    assert Harlow(2, width=5).obs_shape == (6,) and Harlow(2, width=5).num_actions == 5
    space = fam.single_observation_space()
    assert all(space.contains(o.numpy()) for o in env.observe())
    for _ in range(4):
        r = env.step(torch.ones(3, dtype=torch.int32))
        assert all(space.contains(o.numpy()) for o in r.obs)


# ---------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(width=1), ValueError, "width"),
        (dict(width=2.0), TypeError, "width"),
        (dict(width=True), TypeError, "width"),
        (dict(presentations=0), ValueError, "presentations"),
        (dict(presentations=-2), ValueError, "presentations"),
        (dict(fixation_steps=-1), ValueError, "fixation_steps"),
        (dict(fixation_steps="1"), TypeError, "fixation_steps"),
        (dict(presentations=2**30, fixation_steps=3), ValueError, "episode length"),
        (dict(split="valid"), ValueError, "split"),
        (dict(split=None), ValueError, "split"),
        (dict(num_tasks=0), ValueError, "num_tasks"),
        (dict(num_tasks=2.5), TypeError, "num_tasks"),
        (dict(task_seed=-1), ValueError, "task_seed"),
        (dict(task_seed=1.0), TypeError, "task_seed"),
        (dict(value_low=0.0), ValueError, "value_low"),
        (dict(value_low=-0.5), ValueError, "value_low"),
        (dict(value_low="0.1"), TypeError, "value_low"),
        (dict(value_high=0.1), ValueError, "value_high"),
        (dict(value_high=float("inf")), ValueError, "value_high"),
        (dict(value_high=1e39), ValueError, "value_high"),
        (dict(min_gap=0.0), ValueError, "min_gap"),
        (dict(min_gap=-0.1), ValueError, "min_gap"),
        (dict(min_gap=0.95), ValueError, "too large"),
        (dict(value_low=1.0, value_high=1.00000001, min_gap=1e-9), ValueError, "too small"),
        (dict(reward=0.0), ValueError, "reward"),
        (dict(reward=-1.0), ValueError, "reward"),
        (dict(reward=float("nan")), ValueError, "reward"),
        (dict(reward=None), TypeError, "reward"),
        (dict(empty_reward=float("inf")), ValueError, "empty_reward"),
        (dict(empty_reward=False), TypeError, "empty_reward"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_constructor_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        Harlow(2, **kwargs)


def test_bad_env_arguments_and_actions():
    with pytest.raises(ValueError, match="num_envs"):
        Harlow(0)
    with pytest.raises(ValueError, match="episodes_per_trial"):
        Harlow(2, episodes_per_trial=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        Harlow(2, colour="red")
    for backend in BACKENDS:
        env = Harlow(4, width=3, backend=backend)
        before = {k: v.clone() for k, v in env.state.items()}
        for bad in (3, -1, 2**32 + 1):
            a = torch.zeros(4, dtype=torch.int64)
            a[2] = bad
            with pytest.raises(ValueError, match="out of range for env 2"):
                env.step(a)
            assert all(torch.equal(v, before[k]) for k, v in env.state.items())


# ---------------------------------------------------------------------------------------------------
# gymnasium, rendering


@pytest.mark.parametrize("mode", MODES)
def test_make_vec(mode):
    env = gymnasium.make_vec("metakern/Harlow-v0", num_envs=3, autoreset_mode=mode, width=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 4) and env.observation_space.contains(obs) and env.single_action_space.n == 3
    ends = 0
    for _ in range(25):
        obs, rew, term, trunc, info = env.step(env.action_space.sample())
        assert rew.shape == (3,) and not trunc.any()
        if term.any():
            ends += 1
            assert term.all()
            if mode == "same_step":
                assert info["_final_obs"].all()
            if mode == "disabled":
                env.reset(options={"reset_mask": term})
    assert ends == 2
    env.close()


def test_single_env_and_render():
    # gymnasium's env checker runs on every registered id in test_envs_core.py
    env = gymnasium.make("metakern/Harlow-v0", disable_env_checker=True)
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [1.0, 0.0, 0.0]
    steps = 0
    while True:
        obs, _, term, trunc, _ = env.step(0)
        steps += 1
        if term or trunc:
            break
    assert term and steps == 10
    vec = gymnasium.make_vec("metakern/Harlow-v0", num_envs=2, render_mode="rgb_array", width=3)
    vec.reset(seed=0)
    frames = vec.render()
    assert len(frames) == 2 and frames[0].shape == (32, 64, 3) and frames[0].dtype == np.uint8
    assert tuple(frames[0][0, 0]) == (240, 190, 20)  # the fixation cue is on
    vec.step(np.zeros(2, dtype=np.int64))
    img = vec.render()[0]
    inner = vec.unwrapped.env
    pa, pb = int(inner.state["pa"][0]), int(inner.state["pb"][0])
    va, vb = inner.family.values[int(inner.tasks[0])].tolist()
    assert tuple(img[0, 0]) == (60, 60, 60)  # cue off during the choice
    assert abs(int(img[0, 16 * (1 + pa), 0]) - 255 * va) <= 0.5 and abs(int(img[0, 16 * (1 + pb), 0]) - 255 * vb) <= 0.5
    assert tuple(img[16, 16 * (1 + pa)]) == (70, 170, 80) and tuple(img[16, 16 * (1 + pb)]) == (200, 60, 50)
    vec.close()
