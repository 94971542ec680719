"""The MuJoCo benchmark case (metakern/bench/mujoco.py), its peers and its asv suite.

No timing is asserted. The rows run once on a tiny batch (B=2, K=2); one CLI run times a single
row of the real case in quick mode.
"""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")

from bench_testing import load_asv_suite
from metakern.bench import harness
from metakern.bench import mujoco as mj_bench
from metakern.cli import main

CASE_ID = "mujoco/halfcheetah-vel/B=64,K=16"
ROWS = {"cpp", "reference", "gym-sync", "gym-sync-plain", "gym-async"}


def _engine_reason(backend="reference"):
    return mj_bench.engine_unavailable(backend)


def test_the_case_registers_on_cpu_only():
    factory = harness.families()["mujoco"]
    cases = list(factory(torch.device("cpu"), torch.float32))
    assert [c.id for c in cases] == [CASE_ID]
    (case,) = cases
    assert {i.name for i in case.impls} == ROWS
    assert case.items == 64 * 16 and case.baseline == "gym-sync"
    assert {i.name for i in case.impls if i.kind == "peer"} == {"gym-sync", "gym-sync-plain", "gym-async"}
    assert case.impl("cpp").backend == "cpp" and case.impl("reference").backend == "reference"
    assert not list(factory(torch.device("cpu"), torch.float64))
    assert not list(factory(torch.device("cuda"), torch.float32))
    assert "mujoco" not in harness.family_import_errors()


def test_only_selects_the_family_rows():
    case = next(c for c in harness.all_cases("cpu", torch.float32) if c.family == "mujoco")
    runner = harness.Runner(settings=harness.QUICK, select=["mujoco/"], measure_memory=False)
    assert set(runner.selected(case)) == ROWS | {harness.COPY}
    runner = harness.Runner(settings=harness.QUICK, select=["mujoco/*/gym-sync"], measure_memory=False)
    assert runner.selected(case) == ["gym-sync"]
    other = next(c for c in harness.all_cases("cpu", torch.float32) if c.family != "mujoco")
    assert harness.Runner(select=["mujoco/"]).selected(other) == []


def test_every_row_runs_once_on_a_tiny_batch():
    case = mj_bench.halfcheetah_vel_case(num_envs=2, steps=2)
    assert case.shape == "B=2,K=2" and case.items == 4
    ran = set()
    for impl in case.impls:
        if harness.impl_unavailable(impl, case.device) is not None:
            continue
        fn = harness.bound(impl, case.make_inputs())
        fn()
        fn()  # calls continue where the previous one stopped
        if impl.kind == "peer":
            assert fn.engine.num_envs == 2 and fn.env_steps == 4
            fn.close()
        ran.add(impl.name)
    assert {"gym-sync", "gym-sync-plain", "gym-async"} <= ran
    if _engine_reason() is None:
        assert "reference" in ran
    if _engine_reason("cpp") is None:
        assert "cpp" in ran


def test_peer_autoresets_after_the_time_limit():
    actions = mj_bench.make_inputs(num_envs=2, steps=3)["actions_np"]
    run = mj_bench.make_vector_stepper("gym-sync", actions, [1.0, 2.0], max_episode_steps=4)
    env = run.engine
    assert type(env.envs[0]).__name__ == "CheetahVelReward"
    # the warm-up call made 3 steps; 1 more ends the episode, the next one resets (NEXT_STEP)
    _, _, _, trunc, _ = env.step(actions[0])
    assert trunc.all()
    _, reward, _, trunc, _ = env.step(actions[0])
    assert not trunc.any() and (reward == 0).all()
    run.close()


def test_wrapper_reward_is_cheetah_vel():
    import gymnasium as gym

    with mj_bench.quiet_mujoco():
        env = mj_bench.CheetahVelReward(gym.make("HalfCheetah-v5"), goal_velocity=1.5)
    env.reset(seed=3)
    a = np.full(6, 0.5, dtype=np.float32)
    _, reward, _, _, info = env.step(a)
    assert info["task"] == 1.5
    # float32 actions: the control cost is a float32, as in v5's own reward
    assert reward == pytest.approx(-abs(info["x_velocity"] - 1.5) - 0.05 * np.float32(6 * 0.25), abs=1e-12)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_peers_match_the_engine_on_the_same_tasks_and_actions(backend):
    """Seeded alike (env i: reset seed i, as SyncVectorEnv.reset(seed=0)) and given the engine's
    target velocities, the wrapped v5 peer gives the engine's observations and rewards, with the
    same float32 actions (both sum the control cost ``sum(a^2)`` in float32, as v5 does)."""
    reason = _engine_reason(backend)
    if reason is not None:
        pytest.skip(reason)
    B, K = 3, 20  # within the first episode (HalfCheetah never terminates; the limit is 200)
    inputs = mj_bench.make_inputs(num_envs=B, steps=K, seed=1)
    ours = mj_bench.make_env(B, backend, seed=0)
    goals = mj_bench.goal_velocities(ours)
    assert goals is not None and goals.shape == (B,)
    obs0 = ours.reset(seed=0)
    run = mj_bench.make_vector_stepper("gym-sync", inputs["actions_np"][:1], goals, seed=0)  # one warm-up step
    peer = run.engine
    peer_obs, _ = peer.reset(seed=0)
    np.testing.assert_allclose(obs0.numpy(), peer_obs, rtol=0, atol=1e-9)
    for a, a_np in zip(inputs["actions"], inputs["actions_np"], strict=True):
        obs, reward, term, trunc, _ = ours.step(a)
        p_obs, p_reward, p_term, p_trunc, _ = peer.step(a_np)
        np.testing.assert_allclose(obs.numpy(), p_obs, rtol=0, atol=1e-9)
        np.testing.assert_allclose(reward.numpy(), p_reward, rtol=0, atol=1e-9)
        assert not term.any() and not trunc.any() and not p_term.any() and not p_trunc.any()
    run.close()


def test_cli_quick_times_one_row_of_the_case(tmp_path):
    row = "cpp" if _engine_reason("cpp") is None else "gym-sync-plain"
    path = tmp_path / "mujoco.json"
    rc = main(["bench", "--quick", "-q", "--no-memory", "--json", str(path), "--only", f"mujoco/*/{row}"])
    assert rc == 0
    records = json.loads(path.read_text())
    assert [(r["family"], r["case"], r["shape"], r["backend"]) for r in records] == [
        ("mujoco", "halfcheetah-vel", "B=64,K=16", row)
    ]
    assert records[0]["items"] == 1024 and records[0]["items_per_s"] > 0


def test_asv_mujoco_suite_builds_from_the_case():
    suite = load_asv_suite("mujoco")
    assert suite.CASE == CASE_ID and suite.IMPLS == ["cpp", "gym-sync"]
    bench = suite.MujocoStep()
    impl = "cpp" if _engine_reason("cpp") is None else "gym-sync"
    bench.setup(impl)
    bench.time_step(impl)
    assert bench.track_env_steps_per_s(impl) > 0
    if impl != "cpp":
        with pytest.raises(NotImplementedError):
            bench.setup("cpp")
