"""MuJoCo task distributions (metakern/envs/mujoco): one env of a batch against gymnasium's v5 envs
(observations, rewards, flags), task rewards and dynamics recomputed from gymnasium's quantities,
the cpp and reference backends, the papers' task splits, trials, the autoreset modes, the gymnasium
front ends, bad input and the point robot.

Small batches and short rollouts (the whole file runs in seconds); episodes are kept short with
``max_steps`` so that every rollout crosses resets.
"""

import numpy as np
import pytest
import torch

mujoco = pytest.importorskip("mujoco")
gymnasium = pytest.importorskip("gymnasium")

import metakern.envs  # noqa: E402,F401  (registers metakern/<Task>-v0)
from env_testing import assert_same_step  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402
from metakern.envs.core import AutoresetMode  # noqa: E402
from metakern.envs.mujoco import MujocoBatchedEnv, get_family, load_mujoco, task_families  # noqa: E402
from metakern.envs.mujoco.gym import MujocoEnv, MujocoVectorEnv  # noqa: E402
from metakern.envs.registration import MUJOCO_TASKS  # noqa: E402

BODIES = ("HalfCheetah", "Hopper", "Walker2d", "Ant", "Humanoid")
BACKENDS = ("cpp", "reference")
MODES = ("next_step", "same_step", "disabled")
ATOL = 1e-9
DOMINO_SCALES = (0.75, 0.85, 1.0, 1.15, 1.25)
QUARTERS = np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2])
DIAGONALS = np.array([np.pi / 4, 3 * np.pi / 4, 5 * np.pi / 4, 7 * np.pi / 4])


# ---------------------------------------------------------------------------------------------------
# helpers


def _actions(rng: np.random.Generator, env: MujocoBatchedEnv, scale: float = 1.0) -> np.ndarray:
    """Uniform float64 actions over ``scale`` times the action box, ``[B, act_dim]``."""
    lo = env.action_low.astype(np.float64) * scale
    hi = env.action_high.astype(np.float64) * scale
    return rng.uniform(lo, hi, size=(env.num_envs, env.act_dim))


def _close(actual, expected, exact: bool = False, what: str = "") -> None:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL, err_msg=what)
    if exact:
        np.testing.assert_array_equal(actual, expected, err_msg=what)


def _gym_lockstep(env, gyms, steps, *, action_seed=0, reward=None, exact=False):
    """Step ``env`` (autoreset disabled) and one gymnasium env per row with the same float64 actions,
    comparing observations, rewards and flags; reset the envs whose episode ended on both sides.

    ``reward(i, unwrapped_gym_env, action, gym_info, torso_xy_before)``: the expected reward of row i
    (default: gymnasium's own reward). Returns (episode ends, terminations) over the batch."""
    assert env.autoreset_mode == AutoresetMode.DISABLED
    rng = np.random.default_rng(action_seed)
    ends = terms = 0
    for t in range(steps):
        a = _actions(rng, env)
        before = [g.unwrapped.data.body(1).xpos[:2].copy() for g in gyms]
        res = env.step(a)
        for i, g in enumerate(gyms):
            o, r, te, tr, info = g.step(a[i].copy())
            _close(res.obs[i].numpy(), o, exact, f"obs of env {i} at step {t}")
            want = r if reward is None else reward(i, g.unwrapped, a[i], info, before[i])
            _close(res.reward[i].item(), want, exact, f"reward of env {i} at step {t}")
            assert bool(res.terminated[i]) == te, (i, t)
            # metakern (as metakern.envs.core) truncates only episodes that did not terminate;
            # gymnasium's TimeLimit flags both when the last allowed step terminates
            assert bool(res.truncated[i]) == (tr and not te), (i, t)
        done = (res.terminated | res.truncated).numpy()
        ends += int(done.sum())
        terms += int(res.terminated.sum())
        if done.any():
            obs = env.reset(done)
            for i in np.flatnonzero(done):
                o, _ = gyms[i].reset()
                _close(obs[i].numpy(), o, exact, f"reset obs of env {i} after step {t}")
    return ends, terms


def _lockstep(env_a, env_b, steps, action_seed=0):
    """Two MujocoBatchedEnvs stepped with the same actions agree bit for bit (obs, reward, flags,
    every info entry); DISABLED envs are reset where done. Returns the number of episode ends."""
    assert torch.equal(env_a.observe(), env_b.observe())
    rng = np.random.default_rng(action_seed)
    ends = 0
    for _ in range(steps):
        a = _actions(rng, env_a, scale=1.5)  # some out of range: MuJoCo clamps, the cost sees them
        ra, rb = env_a.step(a), env_b.step(torch.from_numpy(a))
        assert_same_step(ra, rb)
        done = ra.terminated | ra.truncated
        ends += int(done.sum())
        if env_a.autoreset_mode == AutoresetMode.DISABLED and done.any():
            assert torch.equal(env_a.reset(done), env_b.reset(done))
    np.testing.assert_array_equal(env_a.task_params, env_b.task_params)
    np.testing.assert_array_equal(env_a.task_index, env_b.task_index)
    return ends


def _scaled_gym(gym_id, seed, fields: dict[str, np.ndarray], reset_first: bool, max_episode_steps=None):
    """gymnasium's v5 env with ``model.<field> *= multiplier`` and ``mj_setConst``, reset with
    ``seed`` (``reset_first``: reset with the seed before changing the model and once more after, as
    ``set_tasks`` resets an already reset env)."""
    g = gymnasium.make(gym_id, max_episode_steps=max_episode_steps)
    u = g.unwrapped
    if reset_first:
        g.reset(seed=seed)
    for name, mult in fields.items():
        target = getattr(u.model, name)
        mult = np.asarray(mult, dtype=np.float64)
        target[...] = target * (mult if mult.size == 1 else mult.reshape(target.shape))
    mujoco.mj_setConst(u.model, u.data)
    obs, _ = g.reset() if reset_first else g.reset(seed=seed)
    return g, obs


# ---------------------------------------------------------------------------------------------------
# 1. exactness against gymnasium's v5 envs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("body", BODIES)
def test_each_env_replays_gymnasium_v5(body, backend):
    B, seed, H = 2, 7, 30
    env = MujocoBatchedEnv(body, B, seed=seed, max_steps=H, autoreset_mode="disabled", backend=backend)
    gyms = [gymnasium.make(f"{body}-v5", max_episode_steps=H) for _ in range(B)]
    exact = body == "HalfCheetah"
    obs0 = env.observe().numpy()
    for i, g in enumerate(gyms):
        o, _ = g.reset(seed=seed + i)
        _close(obs0[i], o, exact, f"initial obs of env {i}")
    assert not np.array_equal(obs0[0], obs0[1])  # env i is seeded with seed + i, not all alike
    ends, terms = _gym_lockstep(env, gyms, 70, exact=exact)
    assert ends >= 2 * B  # every env crossed at least two episode ends
    if body == "Humanoid":
        assert terms > 0  # the random humanoid falls: termination is compared too


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_batch_replays_sync_vector_env_across_episode_ends(mode):
    B, seed, H = 3, 11, 8
    gym_mode = {
        "next_step": gymnasium.vector.AutoresetMode.NEXT_STEP,
        "same_step": gymnasium.vector.AutoresetMode.SAME_STEP,
    }
    env = MujocoBatchedEnv("HalfCheetah", B, seed=seed, max_steps=H, autoreset_mode=mode)
    vec = gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("HalfCheetah-v5", max_episode_steps=H)] * B, autoreset_mode=gym_mode[mode]
    )
    o, _ = vec.reset(seed=seed)
    np.testing.assert_array_equal(env.observe().numpy(), o)
    rng = np.random.default_rng(3)
    truncations = 0
    for _ in range(2 * H + 5):
        a = _actions(rng, env)
        r = env.step(a)
        o, rew, te, tr, infos = vec.step(a)
        np.testing.assert_array_equal(r.obs.numpy(), o)
        np.testing.assert_array_equal(r.reward.numpy(), rew)
        np.testing.assert_array_equal(r.terminated.numpy(), te)
        np.testing.assert_array_equal(r.truncated.numpy(), tr)
        truncations += int(tr.sum())
        if mode == "same_step" and tr.any():
            for i in np.flatnonzero(tr):
                np.testing.assert_array_equal(r.info["final_obs"][i].numpy(), infos["final_obs"][i])
    assert truncations == 2 * B


# ---------------------------------------------------------------------------------------------------
# 2. reward-varying tasks recomputed from gymnasium's quantities


@pytest.mark.parametrize("backend", BACKENDS)
def test_cheetah_vel_reward_from_gymnasium(backend):
    B, seed = 2, 5
    env = MujocoBatchedEnv(
        "HalfCheetahVel", B, seed=seed, max_steps=25, autoreset_mode="disabled", resample_tasks=False, backend=backend
    )
    v = env.task_params[:, 0].copy()
    assert np.all((v >= 0) & (v <= 3)) and v[0] != v[1]
    gyms = [gymnasium.make("HalfCheetah-v5", max_episode_steps=25) for _ in range(B)]
    for i, g in enumerate(gyms):
        g.reset(seed=seed + i)

    def reward(i, u, a, info, before):
        return -abs(info["x_velocity"] - v[i]) - 0.05 * np.sum(np.square(a))

    ends, _ = _gym_lockstep(env, gyms, 40, reward=reward)
    assert ends == B
    np.testing.assert_array_equal(env.task_params[:, 0], v)  # resample_tasks=False kept them


def _ant_contact(u) -> float:
    return float(np.sum(np.square(np.clip(u.data.cfrc_ext, -1.0, 1.0))))


@pytest.mark.parametrize("task", ["AntDir", "AntGoal"])
def test_ant_rewards_from_gymnasium(task):
    B, seed = 2, 13
    preset = "uniform" if task == "AntDir" else "ldm"
    env = MujocoBatchedEnv(
        task, B, seed=seed, preset=preset, max_steps=20, autoreset_mode="disabled", resample_tasks=False
    )
    p = env.task_params.copy()
    # AntGoal never terminates (VariBAD's ant goal); AntDir ends as Ant-v5 does
    terminate = task == "AntDir"
    gyms = [gymnasium.make("Ant-v5", max_episode_steps=20, terminate_when_unhealthy=terminate) for _ in range(B)]
    for i, g in enumerate(gyms):
        g.reset(seed=seed + i)

    def reward(i, u, a, info, before):
        after = u.data.body(1).xpos[:2].copy()
        vxy = (after - before) / u.dt
        _close(vxy, [info["x_velocity"], info["y_velocity"]], what="torso velocity")
        if task == "AntDir":
            forward = vxy[0] * np.cos(p[i, 0]) + vxy[1] * np.sin(p[i, 0])
            return forward - 0.5 * np.sum(np.square(a)) - 5e-4 * _ant_contact(u) + 1.0
        return -np.sum(np.abs(after - p[i, :2])) - 0.1 * np.sum(np.square(a)) - 5e-4 * _ant_contact(u)

    ends, _ = _gym_lockstep(env, gyms, 30, reward=reward)
    assert ends >= B


# ---------------------------------------------------------------------------------------------------
# 3. dynamics with the same parameters


@pytest.mark.parametrize("backend", BACKENDS)
def test_mass_damping_matches_scaled_gymnasium_model(backend):
    seed = 3
    params = np.array([[1.25, 0.75], [0.45, 1.55]])
    env = MujocoBatchedEnv(
        "HalfCheetahMassDamping",
        2,
        seed=seed,
        max_steps=20,
        autoreset_mode="disabled",
        resample_tasks=False,
        backend=backend,
    )
    obs = env.set_tasks(params).numpy()
    gyms = []
    for i in range(2):
        g, o = _scaled_gym(
            "HalfCheetah-v5",
            seed + i,
            {"body_mass": params[i, 0], "dof_damping": params[i, 1]},
            reset_first=True,
            max_episode_steps=20,
        )
        _close(obs[i], o, what=f"obs after set_tasks, env {i}")
        gyms.append(g)
    ends, _ = _gym_lockstep(env, gyms, 30)
    assert ends == 2
    # the same initial state under the unscaled model moves differently: the comparison saw the parameters
    scaled = MujocoBatchedEnv("HalfCheetahMassDamping", 2, seed=seed, resample_tasks=False, backend=backend)
    scaled.set_tasks(params)  # reset noise: the second draw of seed + i
    plain = MujocoBatchedEnv("HalfCheetah", 2, seed=seed, backend=backend)
    np.testing.assert_array_equal(plain.reset().numpy(), obs)  # ... here too
    a = _actions(np.random.default_rng(0), plain)
    assert not np.allclose(scaled.step(a).obs.numpy(), plain.step(a).obs.numpy(), atol=1e-6)


def test_rand_params_match_scaled_gymnasium_model():
    seed = 21
    env = MujocoBatchedEnv(
        "HopperRandParams", 2, seed=seed, max_steps=15, autoreset_mode="disabled", resample_tasks=False
    )
    sizes = {
        f: getattr(env.sim.batch.base, f).size for f in ("body_mass", "body_inertia", "dof_damping", "geom_friction")
    }
    assert env.task_dim == sum(sizes.values()) == len(env.task_params_names)
    gyms, obs = [], env.observe().numpy()
    for i in range(2):
        off, mults = 0, {}
        for f, n in sizes.items():
            mults[f] = env.task_params[i, off : off + n]
            off += n
        g, o = _scaled_gym("Hopper-v5", seed + i, mults, reset_first=False, max_episode_steps=15)
        _close(obs[i], o, what=f"initial obs of env {i}")
        gyms.append(g)
    ends, _ = _gym_lockstep(env, gyms, 25)
    assert ends >= 2


def test_set_const_switch_changes_model_constants_and_the_rollout():
    envs = {}
    for sc in (True, False):
        envs[sc] = MujocoBatchedEnv("HalfCheetahMassDamping", 1, seed=0, set_const=sc, resample_tasks=False)
        envs[sc].set_tasks([1.5, 0.5])
    base = envs[True].sim.batch.base
    on, off = (envs[sc].sim.batch.models[0] for sc in (True, False))
    np.testing.assert_array_equal(on.body_mass, off.body_mass)  # the same task was applied
    np.testing.assert_array_equal(on.body_mass, base.body_mass * 1.5)
    np.testing.assert_allclose(on.body_subtreemass, 1.5 * base.body_subtreemass, rtol=1e-12)
    np.testing.assert_array_equal(off.body_subtreemass, base.body_subtreemass)  # stale without mj_setConst
    assert not np.allclose(on.dof_invweight0, off.dof_invweight0)
    rng = np.random.default_rng(0)
    diff = 0.0
    for _ in range(10):
        a = _actions(rng, envs[True])
        diff = max(diff, float((envs[True].step(a).obs - envs[False].step(a).obs).abs().max()))
    assert diff > 1e-3


# ---------------------------------------------------------------------------------------------------
# 4. backends and threads


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("task", ["HopperRandParams", "CrippleAnt", "AntGoal"])
def test_cpp_matches_reference(task, mode):
    kw = {"seed": 4, "max_steps": 5, "episodes_per_trial": 2, "autoreset_mode": mode}
    a = MujocoBatchedEnv(task, 3, backend="cpp", num_threads=2, **kw)
    b = MujocoBatchedEnv(task, 3, backend="reference", **kw)
    first = a.task_params.copy()
    ends = _lockstep(a, b, 24)
    assert ends >= 3 * 3  # resets inside the rollout in every env
    assert not np.array_equal(a.task_params, first)  # and new trials with new tasks
    for ma, mb in zip(a.sim.batch.models, b.sim.batch.models, strict=True):
        np.testing.assert_array_equal(ma.body_mass, mb.body_mass)
        np.testing.assert_array_equal(ma.dof_damping, mb.dof_damping)
    for da, db in zip(a.sim.batch.datas, b.sim.batch.datas, strict=True):
        np.testing.assert_array_equal(da.qpos, db.qpos)
        np.testing.assert_array_equal(da.ctrl, db.ctrl)


def test_thread_count_does_not_change_results():
    kw = {"seed": 8, "max_steps": 6, "autoreset_mode": "same_step", "backend": "cpp"}
    one = MujocoBatchedEnv("AntGoal", 5, num_threads=1, **kw)
    two = MujocoBatchedEnv("AntGoal", 5, num_threads=2, **kw)
    assert _lockstep(one, two, 14) >= 5


# ---------------------------------------------------------------------------------------------------
# 5. task distributions and splits


@pytest.mark.parametrize("task", ["HalfCheetahVel", "AntGoal", "HopperRandParams", "CrippleAnt"])
def test_tasks_follow_the_seed(task):
    a, b = (MujocoBatchedEnv(task, 6, seed=1) for _ in range(2))
    c = MujocoBatchedEnv(task, 6, seed=2)
    np.testing.assert_array_equal(a.task_params, b.task_params)
    np.testing.assert_array_equal(a.observe(), b.observe())
    assert not np.array_equal(a.task_params, c.task_params)
    assert len({tuple(r) for r in a.task_params}) > 1  # envs of one batch get different tasks


def _sample(task, preset, split, n=3000, seed=0):
    fam = get_family(task)
    model = MujocoBatchedEnv(task, 1).sim.model_like
    return fam.sample(np.random.default_rng(seed), n, preset, split, model)


def test_cheetah_vel_ldm_split():
    train = _sample("HalfCheetahVel", "ldm", "train")[:, 0]
    low, high = (train >= 0) & (train <= 0.5), (train >= 3) & (train <= 3.5)
    assert np.all(low | high) and low.mean() == pytest.approx(0.5, abs=0.05)
    test = _sample("HalfCheetahVel", "ldm", "test")[:, 0]
    assert np.all((test >= 0.5) & (test <= 3)) and test.min() < 0.6 and test.max() > 2.9
    env = MujocoBatchedEnv("HalfCheetahVel", 16, preset="ldm", split="test", seed=3)
    assert np.all((env.task_params >= 0.5) & (env.task_params <= 3))
    env = MujocoBatchedEnv("HalfCheetahVel", 16, preset="ldm", seed=3)
    v = env.task_params[:, 0]
    assert np.all(((v >= 0) & (v <= 0.5)) | ((v >= 3) & (v <= 3.5)))


def test_ant_goal_ldm_split():
    train = _sample("AntGoal", "ldm", "train")
    r = np.linalg.norm(train, axis=1)
    disk, ring = r <= 1.0, (r >= 2.5 - 1e-12) & (r <= 3.0 + 1e-12)
    assert np.all(disk | ring)
    assert disk.mean() == pytest.approx(1 / 3.75, abs=0.04)  # uniform over the area of disk + annulus
    angles = np.arctan2(train[:, 1], train[:, 0])
    assert np.histogram(angles, bins=4, range=(-np.pi, np.pi))[0].min() > 500
    test_r = np.linalg.norm(_sample("AntGoal", "ldm", "test"), axis=1)
    assert np.all((test_r >= 1.0 - 1e-12) & (test_r <= 2.5 + 1e-12))
    assert test_r.min() < 1.1 and test_r.max() > 2.4
    env = MujocoBatchedEnv("AntGoal", 8, split="test", seed=2)  # ldm is the default preset
    r = np.linalg.norm(env.task_params, axis=1)
    assert np.all((r >= 1.0) & (r <= 2.5))


def test_ant_dir_ldm_split():
    train = _sample("AntDir", "ldm", "train", n=400)[:, 0]
    test = _sample("AntDir", "ldm", "test", n=400)[:, 0]
    assert set(train) == set(QUARTERS) and set(test) == set(DIAGONALS)
    env = MujocoBatchedEnv("AntDir", 8, split="test", seed=1)
    assert set(env.task_params[:, 0]) <= set(DIAGONALS)
    np.testing.assert_array_equal(DIAGONALS[env.task_index], env.task_params[:, 0])


def test_pearl_cheetah_vel_fixed_lists():
    fam = get_family("HalfCheetahVel")
    velocities = np.random.RandomState(1337).uniform(0.0, 3.0, size=130)
    train, test = fam.fixed_tasks("pearl", "train"), fam.fixed_tasks("pearl", "test")
    assert train.shape == (100, 1) and test.shape == (30, 1)
    np.testing.assert_array_equal(train[:, 0], velocities[:100])
    np.testing.assert_array_equal(test[:, 0], velocities[100:])
    for split, lst in (("train", train), ("test", test)):
        env = MujocoBatchedEnv("HalfCheetahVel", 12, preset="pearl", split=split, seed=5)
        assert np.all((env.task_index >= 0) & (env.task_index < len(lst)))
        np.testing.assert_array_equal(env.task_params, lst[env.task_index])
        assert len(set(env.task_index.tolist())) > 1


@pytest.mark.parametrize("task", ["HalfCheetahMassDamping", "AntMassDamping"])
def test_domino_mass_damping_split(task):
    train = _sample(task, None, "train", n=500)
    assert set(train.ravel()) == set(DOMINO_SCALES)
    test = _sample(task, None, "test", n=500)
    lo, hi = (test >= 0.4) & (test <= 0.5), (test >= 1.5) & (test <= 1.6)
    assert np.all(lo | hi) and lo.any() and hi.any()
    env = MujocoBatchedEnv(task, 4, split="test", seed=6)
    base = env.sim.batch.base
    for i, m in enumerate(env.sim.batch.models):
        mass, damping = env.task_params[i]
        np.testing.assert_array_equal(m.body_mass, base.body_mass * mass)
        np.testing.assert_array_equal(m.dof_damping, base.dof_damping * damping)
    assert env.task_params_names == ("mass_scale", "damping_scale")


def test_hopper_mass_damping_scales():
    train = _sample("HopperMassDamping", None, "train", n=500)
    assert set(train.ravel()) == {0.5, 0.75, 1.0, 1.25, 1.5}
    test = _sample("HopperMassDamping", None, "test", n=500)
    assert np.all(((test >= 0.25) & (test <= 0.375)) | ((test >= 1.75) & (test <= 2.0)))


@pytest.mark.parametrize("split", ["train", "test"])
def test_cripple_ant_zeroes_the_crippled_legs_controls(split):
    limbs = {0: (2, 3), 1: (4, 5), 2: (6, 7), 3: (0, 1)}
    env = MujocoBatchedEnv("CrippleAnt", 6, split=split, seed=4)
    limb = env.task_params[:, 0].astype(int)
    mass = env.task_params[:, 1]
    if split == "test":
        assert np.all(limb == 3)
        assert np.all(((mass >= 0.4) & (mass <= 0.5)) | ((mass >= 1.5) & (mass <= 1.6)))
    else:
        assert set(limb) <= {0, 1, 2} and len(set(limb)) > 1
        assert set(mass) <= set(DOMINO_SCALES)
    a = np.full((6, 8), 0.5)
    a[:, 1::2] = -0.25
    env.step(a)
    for i, d in enumerate(env.sim.batch.datas):
        crippled = list(limbs[limb[i]])
        np.testing.assert_array_equal(d.ctrl[crippled], 0.0)
        intact = [j for j in range(8) if j not in crippled]
        np.testing.assert_array_equal(d.ctrl[intact], a[i, intact])
        np.testing.assert_array_equal(env.sim.batch.models[i].body_mass, env.sim.batch.base.body_mass * mass[i])


def test_cripple_half_cheetah_split():
    train = _sample("CrippleHalfCheetah", None, "train", n=300)
    test = _sample("CrippleHalfCheetah", None, "test", n=300)
    assert set(train[:, 0]) == {0, 1, 2, 3} and set(test[:, 0]) == {4, 5}
    env = MujocoBatchedEnv("CrippleHalfCheetah", 3, seed=0, resample_tasks=False)
    env.set_tasks([[4.0, 1.0], [5.0, 1.0], [0.0, 1.0]])
    env.step(np.ones((3, 6)))
    np.testing.assert_array_equal([d.ctrl.copy() for d in env.sim.batch.datas], 1.0 - np.eye(6)[[4, 5, 0]])


def test_eval_task_lists():
    vel = get_family("HalfCheetahVel").eval_tasks("ldm")
    np.testing.assert_array_equal(vel["train"][:, 0], [0.25, 3.25])
    np.testing.assert_array_equal(vel["test"][:, 0], [0.75, 1.25, 1.75, 2.25, 2.75])
    d = get_family("AntDir").eval_tasks()
    np.testing.assert_array_equal(d["train"][:, 0], QUARTERS)
    np.testing.assert_array_equal(d["test"][:, 0], DIAGONALS)
    g = get_family("AntGoal").eval_tasks("ldm")
    r_train, r_test = np.linalg.norm(g["train"], axis=1), np.linalg.norm(g["test"], axis=1)
    assert g["train"].shape == (8, 2) and g["test"].shape == (4, 2)
    np.testing.assert_allclose(sorted(r_train), [0.5] * 4 + [2.75] * 4)
    np.testing.assert_allclose(r_test, 1.75)
    assert np.all((r_train <= 1) | (r_train >= 2.5))  # evaluation goals lie in their split's region
    itts = get_family("AntVel").eval_tasks("itts")
    assert itts["train"].shape == (18, 1) and itts["test"].shape == (5, 1)
    with pytest.raises(ValueError, match="no evaluation list"):
        get_family("HalfCheetahVel").eval_tasks("varibad")


def test_task_pool():
    env = MujocoBatchedEnv("HalfCheetahVel", 3, preset="ldm", num_tasks=4, max_steps=2, seed=9)
    pool = env._pool
    assert pool.shape == (4, 1) and len(np.unique(pool)) == 4
    assert np.all(((pool >= 0) & (pool <= 0.5)) | ((pool >= 3) & (pool <= 3.5)))
    np.testing.assert_array_equal(MujocoBatchedEnv("HalfCheetahVel", 5, preset="ldm", num_tasks=4, seed=9)._pool, pool)
    assert not np.array_equal(MujocoBatchedEnv("HalfCheetahVel", 3, preset="ldm", num_tasks=4, seed=10)._pool, pool)
    np.testing.assert_array_equal(env.task_params, pool[env.task_index])
    seen = set()
    for _ in range(16):
        r = env.step(np.zeros((3, 6)))
        k = r.info["task"].numpy()
        assert np.all((k >= 0) & (k < 4))
        np.testing.assert_array_equal(r.info["task_params"].numpy(), pool[k])
        seen |= set(k.tolist())
    assert len(seen) > 1


def test_every_registered_task_builds_and_steps():
    assert set(MUJOCO_TASKS) == {*task_families(), "SparsePointRobot", "SparsePointRobotDynamics"}
    for task in MUJOCO_TASKS:
        env = MujocoBatchedEnv(task, 2, seed=0, max_steps=3)
        r = env.step(np.zeros((2, env.act_dim)))
        assert r.obs.shape == (2, env.obs_dim) and torch.isfinite(r.obs).all() and torch.isfinite(r.reward).all()
        assert env.task_params.shape == (2, env.task_dim) == (2, len(env.task_params_names))


# ---------------------------------------------------------------------------------------------------
# 6. trials


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_trials_keep_the_task_for_episodes_per_trial(mode):
    H = 3
    env = MujocoBatchedEnv(
        "HalfCheetahVel", 2, seed=0, max_steps=H, episodes_per_trial=2, explore_episodes=1, autoreset_mode=mode
    )
    first = env.task_params.copy()
    reset_steps = 1 if mode == "next_step" else 0  # NEXT_STEP spends one step on each reset
    L = H + reset_steps  # steps per episode
    rows = []
    for _ in range(3 * L):
        r = env.step(np.zeros((2, 6)))
        rows.append({k: r.info[k].numpy().copy() for k in ("episode", "explore", "trial_done", "task_params")})
        rows[-1]["done"] = (r.terminated | r.truncated).numpy()
    start2 = 2 * L - reset_steps  # NEXT_STEP: the reset step after the trial already belongs to the next one
    for t, row in enumerate(rows[:start2]):  # two episodes of the first trial
        np.testing.assert_array_equal(row["task_params"], first, err_msg=f"step {t + 1}")
    ep0, ep1 = rows[:H], rows[L : L + H]
    assert all((row["episode"] == 0).all() and row["explore"].all() for row in ep0)
    assert all((row["episode"] == 1).all() and not row["explore"].any() for row in ep1)
    assert rows[H - 1]["done"].all() and not rows[H - 1]["trial_done"].any()  # first episode ends
    assert rows[L + H - 1]["done"].all() and rows[L + H - 1]["trial_done"].all()  # the trial ends
    second = rows[start2]  # first step of the second trial: a new task
    assert (second["episode"] == 0).all() and second["explore"].all()
    assert np.all(second["task_params"] != first)
    np.testing.assert_array_equal(second["task_params"], env.task_params)


def test_trials_in_disabled_mode_follow_reset_mask():
    env = MujocoBatchedEnv("AntGoal", 2, seed=1, max_steps=2, episodes_per_trial=2, autoreset_mode="disabled")
    first = env.task_params.copy()
    done = np.ones(2, dtype=bool)
    for trial_step in range(2):  # two episodes in one task
        for _ in range(2):
            r = env.step(np.zeros((2, 8)))
        assert r.truncated.all() and r.info["trial_done"].all() == (trial_step == 1)
        np.testing.assert_array_equal(r.info["episode"].numpy(), [trial_step] * 2)
        env.reset(done)
        if trial_step == 0:
            np.testing.assert_array_equal(env.task_params, first)
    assert np.all(env.task_params != first)  # the reset after the trial's last episode drew new tasks
    np.testing.assert_array_equal(env.episode, [0, 0])


def test_next_step_reset_step_after_a_trial_reports_the_new_trial():
    """The NEXT_STEP reset step belongs to the episode it starts (as ``metakern.envs.core`` does: the
    gridworlds report episode 0, its explore flag and the new task there). After a non-final episode
    the MuJoCo env does so (episode 1); after the trial's last episode it must report episode 0 and the
    new task, whose first observation it returns."""
    H = 2
    env = MujocoBatchedEnv("HalfCheetahVel", 1, seed=0, max_steps=H, episodes_per_trial=2, explore_episodes=1)
    zero = np.zeros((1, 6))
    for _ in range(2 * (H + 1) - 1):  # two episodes, the reset step between them, to the trial's end
        r = env.step(zero)
    assert r.info["trial_done"].all()
    first_task = r.info["task_params"].clone()
    r = env.step(zero)  # the reset step: reward 0, the new trial's first obs
    assert r.reward.item() == 0.0
    new_task = torch.from_numpy(env.task_params.copy())
    assert not torch.equal(new_task, first_task)
    assert r.info["episode"].tolist() == [0]
    assert r.info["explore"].tolist() == [True]
    assert torch.equal(r.info["task_params"], new_task)


# ---------------------------------------------------------------------------------------------------
# 7. autoreset modes


def test_next_step_returns_the_reset_observation():
    B, seed, H = 2, 4, 3
    env = MujocoBatchedEnv("HalfCheetah", B, seed=seed, max_steps=H)
    gyms = [gymnasium.make("HalfCheetah-v5") for _ in range(B)]
    second = []
    for i, g in enumerate(gyms):
        g.reset(seed=seed + i)
        second.append(g.reset()[0])  # the second episode's first observation
    rng = np.random.default_rng(0)
    for _ in range(H):
        r = env.step(_actions(rng, env))
    assert r.truncated.all() and not r.terminated.any()
    terminal = r.obs.clone()
    r = env.step(_actions(rng, env))
    np.testing.assert_array_equal(r.obs.numpy(), np.stack(second))
    assert not torch.equal(r.obs, terminal)
    assert (r.reward == 0).all() and not r.terminated.any() and not r.truncated.any()
    assert (r.info["x_velocity"] == 0).all()
    r = env.step(_actions(rng, env))
    assert (r.reward != 0).all()


def test_same_step_final_obs_and_disabled_reset():
    kw = {"seed": 2, "max_steps": 4}
    same = MujocoBatchedEnv("Hopper", 2, autoreset_mode="same_step", **kw)
    off = MujocoBatchedEnv("Hopper", 2, autoreset_mode="disabled", **kw)
    rng = np.random.default_rng(1)
    for _ in range(4):
        a = _actions(rng, same)
        rs, ro = same.step(a), off.step(a)
    assert rs.truncated.all() and ro.truncated.all()
    torch.testing.assert_close(rs.info["final_obs"], ro.obs, rtol=0, atol=0)  # the terminal obs
    assert torch.equal(rs.reward, ro.reward)
    with pytest.raises(RuntimeError, match="reset"):
        off.step(a)
    with pytest.raises(RuntimeError, match="reset"):  # still refused, nothing was stepped
        off.step(a)
    partial = np.array([True, False])
    off.reset(partial)
    with pytest.raises(RuntimeError, match="env 1"):
        off.step(a)
    obs = off.reset(np.array([False, True]))
    torch.testing.assert_close(rs.obs, obs, rtol=0, atol=0)  # SAME_STEP returned the reset obs
    assert not torch.equal(rs.obs, rs.info["final_obs"])
    a = _actions(rng, same)
    assert torch.equal(same.step(a).obs, off.step(a).obs)


def test_disabled_episode_end_by_termination():
    env = MujocoBatchedEnv("Humanoid", 1, seed=0, autoreset_mode="disabled", max_steps=100)
    rng = np.random.default_rng(0)
    for _ in range(99):
        r = env.step(_actions(rng, env))
        if r.terminated.any():
            break
    assert r.terminated.all() and not r.truncated.any()
    assert r.obs[0, 0] < 1.0  # the torso fell below v5's healthy z range
    with pytest.raises(RuntimeError, match="disabled"):
        env.step(_actions(rng, env))
    env.reset(np.array([True]))
    assert not env.step(_actions(rng, env)).terminated.any()


# ---------------------------------------------------------------------------------------------------
# 8. gymnasium front ends


def test_make_vec_half_cheetah_vel():
    vec = gymnasium.make_vec("metakern/HalfCheetahVel-v0", num_envs=4, preset="ldm", max_steps=3)
    assert isinstance(vec.unwrapped, MujocoVectorEnv) and vec.num_envs == 4
    assert vec.single_observation_space.shape == (17,) and vec.single_observation_space.dtype == np.float64
    assert vec.single_action_space.shape == (6,)
    np.testing.assert_array_equal(vec.single_action_space.low, -1.0)
    assert vec.observation_space.shape == (4, 17) and vec.action_space.shape == (4, 6)
    assert vec.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, 17) and obs in vec.observation_space
    direct = MujocoBatchedEnv("HalfCheetahVel", 4, preset="ldm", seed=0)
    np.testing.assert_array_equal(obs, direct.observe().numpy())
    vec.action_space.seed(0)
    for _ in range(3):
        obs, rew, te, tr, infos = vec.step(vec.action_space.sample())
        assert obs.shape == (4, 17) and rew.shape == (4,) and rew.dtype == np.float64
        assert te.dtype == np.bool_ and tr.dtype == np.bool_ and te.shape == (4,)
    assert tr.all()
    for key in (
        "task",
        "task_params",
        "episode",
        "explore",
        "trial_done",
        "x_velocity",
        "reward_forward",
        "reward_ctrl",
    ):
        assert key in infos and infos["_" + key].all(), key
    assert infos["task_params"].shape == (4, 1)
    v = infos["task_params"][:, 0]
    assert np.all(((v >= 0) & (v <= 0.5)) | ((v >= 3) & (v <= 3.5)))
    np.testing.assert_allclose(rew, -np.abs(infos["x_velocity"] - v) + infos["reward_ctrl"], rtol=0, atol=ATOL)
    obs, _ = vec.reset(options={"task_params": np.array([[0.1], [0.2], [0.3], [0.4]])})
    _, _, _, _, infos = vec.step(np.zeros((4, 6), dtype=np.float32))
    np.testing.assert_array_equal(infos["task_params"][:, 0], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="unknown reset options"):
        vec.reset(options={"mask": np.ones(4, bool)})
    vec.close()


def test_vector_env_same_step_and_disabled_modes():
    vec = gymnasium.make_vec("metakern/HalfCheetah-v0", num_envs=2, max_steps=2, autoreset_mode="same_step")
    vec.reset(seed=1)
    for _ in range(2):
        obs, _, _, tr, infos = vec.step(np.zeros((2, 6)))
    assert tr.all() and infos["_final_obs"].all()
    assert infos["final_obs"][0].shape == (17,) and not np.array_equal(infos["final_obs"][0], obs[0])
    vec = gymnasium.make_vec("metakern/HalfCheetah-v0", num_envs=2, max_steps=2, autoreset_mode="disabled")
    assert vec.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.DISABLED
    vec.reset(seed=1)
    for _ in range(2):
        vec.step(np.zeros((2, 6)))
    with pytest.raises(RuntimeError):
        vec.step(np.zeros((2, 6)))
    obs, _ = vec.reset(options={"reset_mask": np.array([True, True])})
    assert obs.shape == (2, 17)
    vec.step(np.zeros((2, 6)))


def test_make_ant_goal_passes_gymnasium_env_checker():
    env = gymnasium.make("metakern/AntGoal-v0")
    assert isinstance(env.unwrapped, MujocoEnv)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"task_params": [1.0, -2.0]})
    assert obs.shape == env.observation_space.shape == (105,)
    np.testing.assert_array_equal(info["task_params"], [1.0, -2.0])
    obs, reward, terminated, truncated, info = env.step(np.zeros(8, dtype=np.float32))
    xy = env.unwrapped.env.sim.batch.datas[0].xpos[1, :2]
    _close(info["reward_goal"], -(abs(xy[0] - 1.0) + abs(xy[1] + 2.0)))
    _close(reward, info["reward_goal"] + info["reward_ctrl"] + info["reward_contact"])
    assert not terminated and not truncated
    env.close()


@pytest.mark.parametrize("front", ["single", "vector"])
def test_reset_with_seed_and_task_params_matches_gymnasium(front):
    """``reset(seed=s, options={"task_params": p})`` is gymnasium's reset with seed s (env i: s + i)
    of the env with parameters p: the initial state must come from the seed's first draw, as with
    ``reset(seed=s)`` alone."""
    p = [1.25, 0.75]
    if front == "single":
        env = gymnasium.make("metakern/HalfCheetahMassDamping-v0")
        obs, _ = env.reset(seed=5, options={"task_params": p})
    else:
        env = gymnasium.make_vec("metakern/HalfCheetahMassDamping-v0", num_envs=1)
        obs, _ = env.reset(seed=5, options={"task_params": [p]})
        obs = obs[0]
    _, want = _scaled_gym("HalfCheetah-v5", 5, {"body_mass": p[0], "dof_damping": p[1]}, reset_first=False)
    _close(obs, want)


# ---------------------------------------------------------------------------------------------------
# 9. bad input


def test_bad_actions():
    env = MujocoBatchedEnv("HalfCheetah", 2)
    with pytest.raises(ValueError, match=r"shape \(2, 6\)"):
        env.step(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"shape \(2, 6\)"):
        env.step(np.zeros(12))
    bad = np.zeros((2, 6))
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        env.step(bad)
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        env.step(torch.from_numpy(bad))
    with pytest.raises(TypeError, match="real numbers"):
        env.step(np.zeros((2, 6), dtype=np.complex128))
    with pytest.raises(TypeError, match="real numbers"):
        env.step(np.array([["a"] * 6] * 2))
    assert env._elapsed.tolist() == [0, 0]  # the refused calls did not step
    assert env.step(np.zeros((2, 6), dtype=np.int64)).obs.shape == (2, 17)  # integers are real numbers
    assert env._elapsed.tolist() == [1, 1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task": "HalfCheetahVelocity"}, "unknown MuJoCo task"),
        ({"task": "HalfCheetahVel", "preset": "maml"}, "unknown preset"),
        ({"task": "HalfCheetah", "preset": "ldm"}, "no presets"),
        ({"task": "HalfCheetahVel", "split": "valid"}, "split"),
        ({"task": "HalfCheetahVel", "reward_options": {"ctrl_weight": 0.1}}, "unknown reward_options"),
        ({"task": "HalfCheetah", "backend": "cuda"}, "backend"),
        ({"task": "HalfCheetah", "num_envs": 0}, "num_envs"),
        ({"task": "HalfCheetah", "seed": -1}, "seed"),
        ({"task": "HalfCheetah", "obs_dtype": torch.float16}, "obs_dtype"),
        ({"task": "HalfCheetah", "autoreset_mode": "eventually"}, "autoreset_mode"),
        ({"task": "HalfCheetah", "explore_episodes": 2}, "explore_episodes"),
        ({"task": "HalfCheetahVel", "num_tasks": 0}, "num_tasks"),
        ({"task": "HalfCheetah", "max_steps": -1}, "max_steps"),
    ],
)
def test_bad_construction(kwargs, match):
    kwargs = {"num_envs": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        MujocoBatchedEnv(kwargs.pop("task"), kwargs.pop("num_envs"), **kwargs)


def test_bad_set_tasks():
    env = MujocoBatchedEnv("HalfCheetahMassDamping", 2, resample_tasks=False)
    before = env.task_params.copy()
    with pytest.raises(ValueError, match="shape"):
        env.set_tasks(np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        env.set_tasks(np.ones((3, 2)))
    with pytest.raises(ValueError, match="finite"):
        env.set_tasks([1.0, np.nan])
    with pytest.raises(ValueError, match="finite"):
        env.set_tasks(torch.tensor([[1.0, 1.0], [np.inf, 1.0]]))
    with pytest.raises(ValueError, match="mask"):
        env.set_tasks([1.0, 1.0], mask=np.array([1, 0]))
    np.testing.assert_array_equal(env.task_params, before)
    env.set_tasks(np.array([[0.45, 1.55]]), mask=np.array([False, True]))
    np.testing.assert_array_equal(env.task_params, [before[0], [0.45, 1.55]])
    cripple = MujocoBatchedEnv("CrippleAnt", 1)
    with pytest.raises(ValueError, match="limb"):
        cripple.set_tasks([7.0, 1.0])


def test_float32_observations_and_rewards():
    env = MujocoBatchedEnv("AntGoal", 2, obs_dtype=torch.float32, seed=1)
    ref = MujocoBatchedEnv("AntGoal", 2, seed=1)
    assert env.observe().dtype == torch.float32
    a = _actions(np.random.default_rng(0), env)
    r, r64 = env.step(a), ref.step(a)
    assert r.obs.dtype == torch.float32 and r.reward.dtype == torch.float32
    torch.testing.assert_close(r.obs, r64.obs.float(), rtol=0, atol=0)  # the float64 result, rounded
    torch.testing.assert_close(r.reward, r64.reward.float(), rtol=0, atol=0)
    vec = MujocoVectorEnv(MujocoBatchedEnv("HalfCheetah", 2, obs_dtype=torch.float32))
    assert vec.single_observation_space.dtype == np.float32
    obs, _ = vec.reset(seed=0)
    assert obs.dtype == np.float32 and obs in vec.observation_space


def test_load_mujoco_refuses_4_0_0(monkeypatch):
    assert load_mujoco() is mujoco
    monkeypatch.setattr(mujoco, "__version__", "4.0.0")
    with pytest.raises(ImportError, match=r"4\.0\.1"):
        load_mujoco()
    with pytest.raises(ImportError, match=r"4\.0\.0"):
        MujocoBatchedEnv("HalfCheetah", 1)


def test_reset_with_seed_keeps_set_tasks_when_not_resampling():
    """``resample_tasks=False``: "keep the one set by set_tasks" at every new trial, including the
    one ``reset(seed=...)`` starts (``metakern.envs.core.BatchedEnv`` keeps them too)."""
    env = MujocoBatchedEnv("HalfCheetahVel", 2, seed=0, resample_tasks=False)
    env.set_tasks([[1.0], [2.0]])
    env.reset()
    np.testing.assert_array_equal(env.task_params, [[1.0], [2.0]])
    env.reset(seed=3)
    np.testing.assert_array_equal(env.task_params, [[1.0], [2.0]])


# ---------------------------------------------------------------------------------------------------
# 10. sparse point robot


def test_sparse_point_robot():
    env = MujocoBatchedEnv("SparsePointRobot", 1, seed=0, resample_tasks=False)
    assert env.max_steps == 20 and env.obs_dim == 2 and env.act_dim == 2
    np.testing.assert_array_equal(env.action_low, np.float32(-0.1))
    np.testing.assert_array_equal(env.action_high, np.float32(0.1))
    np.testing.assert_array_equal(env.observe().numpy(), [[0.0, 0.0]])
    env.set_tasks([0.25, 0.0])
    # (action, position after the step); actions are clipped to [-0.1, 0.1]
    steps = [
        ([0.1, 0.0], [0.1, 0.0]),
        ([5.0, 0.0], [0.2, 0.0]),
        ([0.1, -0.0], [0.3, 0.0]),
        ([0.0, 0.1], [0.3, 0.1]),
        ([0.1, 0.3], [0.4, 0.2]),
        ([-3.0, -3.0], [0.3, 0.1]),
    ]
    for t, (a, pos) in enumerate(steps):
        r = env.step(np.array([a]))
        np.testing.assert_allclose(r.obs[0].numpy(), pos, atol=1e-12)
        d = np.hypot(pos[0] - 0.25, pos[1])
        want = 1.0 - d if d <= 0.2 else 0.0
        assert r.reward.item() == pytest.approx(want, abs=1e-12), t
        assert r.info["dense_reward"].item() == pytest.approx(-d, abs=1e-12)
        assert r.info["success"].item() == float(d <= 0.2)
        assert not r.terminated.any() and not r.truncated.any()
    rewards = [0.0]
    rng = np.random.default_rng(0)
    for t in range(len(steps), 20):
        prev = env.observe().numpy()
        r = env.step(rng.uniform(-1, 1, size=(1, 2)))
        assert np.all(np.abs(r.obs.numpy() - prev) <= 0.1 + 1e-12)
        assert r.truncated.item() == (t == 19)
        rewards.append(r.reward.item())
    assert np.all(np.asarray(rewards) >= 0.0)
    r = env.step(np.zeros((1, 2)))  # NEXT_STEP: back at the origin
    np.testing.assert_array_equal(r.obs.numpy(), [[0.0, 0.0]])


def test_point_robot_goals():
    fam = get_family("SparsePointRobot")
    train, test = fam.fixed_tasks("pearl", "train"), fam.fixed_tasks("pearl", "test")
    assert train.shape == (80, 2) and test.shape == (20, 2)
    both = np.concatenate((train, test))
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0)
    assert np.all(both[:, 1] >= -1e-12) and len({tuple(g) for g in both.tolist()}) == 100
    env = MujocoBatchedEnv("SparsePointRobot", 6, split="test", seed=3)
    np.testing.assert_array_equal(env.task_params, test[env.task_index])


def test_point_robot_motor_dynamics():
    """SparsePointRobotDynamics: xy += gain * R(rotation) @ clip(a), the rest as PEARL's point robot."""
    env = MujocoBatchedEnv("SparsePointRobotDynamics", 3, seed=0, resample_tasks=False)
    assert env.task_params_names == ("goal_x", "goal_y", "motor_gain", "motor_rotation")
    tasks = np.array([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.5, np.pi / 2], [0.0, 1.0, 0.5, -np.pi / 4]])
    env.set_tasks(tasks)
    pos = np.zeros((3, 2))
    rng = np.random.default_rng(1)
    for _ in range(20):
        a = rng.uniform(-0.3, 0.3, size=(3, 2))
        r = env.step(a)
        c = np.clip(a, -0.1, 0.1)
        for i, (_, _, g, phi) in enumerate(tasks):
            rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
            pos[i] += g * rot @ c[i]
        np.testing.assert_allclose(r.obs.numpy(), pos, atol=1e-12)
        d = np.linalg.norm(pos - tasks[:, :2], axis=1)
        np.testing.assert_allclose(r.reward.numpy(), np.where(d <= 0.2, 1.0 - d, 0.0), atol=1e-12)
    # the identity motor is PEARL's point robot
    plain = MujocoBatchedEnv("SparsePointRobot", 1, seed=0, resample_tasks=False)
    plain.set_tasks([0.0, 1.0])
    env.set_tasks(tasks)
    for _ in range(20):
        a = rng.uniform(-0.3, 0.3, size=(1, 2))
        np.testing.assert_array_equal(plain.step(a).obs.numpy()[0], env.step(np.repeat(a, 3, 0)).obs.numpy()[0])


def test_point_robot_motor_splits():
    train = MujocoBatchedEnv("SparsePointRobotDynamics", 256, seed=0, split="train")
    test = MujocoBatchedEnv("SparsePointRobotDynamics", 256, seed=0, split="test")
    goals = get_family("SparsePointRobot")
    assert {tuple(g) for g in train.task_params[:, :2].tolist()} <= {
        tuple(g) for g in goals.fixed_tasks("pearl", "train").tolist()
    }
    gain, rot = train.task_params[:, 2], train.task_params[:, 3]
    assert set(np.round(gain, 6).tolist()) == {0.75, 0.85, 1.0, 1.15, 1.25}
    assert np.all(np.abs(rot) <= np.pi / 6) and rot.min() < -0.3 and rot.max() > 0.3
    gain, rot = test.task_params[:, 2], test.task_params[:, 3]
    assert np.all(((gain >= 0.4) & (gain <= 0.5)) | ((gain >= 1.5) & (gain <= 1.6)))
    assert np.all((np.abs(rot) >= np.pi / 6) & (np.abs(rot) <= np.pi / 3)) and (rot < 0).any() and (rot > 0).any()
    with pytest.raises(ValueError, match="no MuJoCo model"):
        MujocoBatchedEnv("SparsePointRobotDynamics", 2, backend="warp")
    vec = gymnasium.make_vec("metakern/SparsePointRobotDynamics-v0", num_envs=2)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, 2)
    vec.close()
