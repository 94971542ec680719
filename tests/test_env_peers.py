"""The peer engines of the gridworld benchmarks (metakern.bench.env_peers): they build, step and count.

Peers whose packages are missing are skipped (CI need not install JAX, gymnax or minigrid). No
timing is asserted.
"""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from metakern.bench import env_peers

N, T = 4, 3


def test_module_is_light_and_registers_nothing():
    # A fresh interpreter: loading every family (this module included) must not import the peers.
    code = (
        "import sys\n"
        "from metakern.bench import harness\n"
        "fams = harness.families()\n"
        "assert 'metakern.bench.env_peers' in sys.modules, 'env_peers was not imported'\n"
        "assert not any(f.__module__.endswith('.env_peers') for f in fams.values()), 'env_peers registered'\n"
        "heavy = {'jax', 'gymnax', 'minigrid', 'flax'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_peer_has_a_reason():
    reason = env_peers.peer_unavailable("no-such-engine")
    assert isinstance(reason, str) and "no-such-engine" in reason
    with pytest.raises(ValueError, match="no-such-engine"):
        env_peers.make_peer_stepper("no-such-engine", N, T)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        env_peers.make_peer_stepper("gym-sync", 0, T, env_fn=lambda: None)


def test_gym_sync_needs_env_fn():
    with pytest.raises(TypeError, match="env_fn"):
        env_peers.make_peer_stepper("gym-sync", N, T)


def _check(run, env_steps, name):
    assert env_steps == N * T == run.env_steps
    assert run.name == name and run.num_envs == N and run.steps == T
    assert run.setup_s > 0
    assert run() is None
    run()


@pytest.mark.parametrize("name", sorted(env_peers.GYMNAX_ENVS))
def test_gymnax_peer_runs(name):
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    assert env_peers.peer_unavailable(name) is None
    run, env_steps = env_peers.make_peer_stepper(name, N, T)
    _check(run, env_steps, name)
    assert run.compile_s is not None and run.compile_s > 0
    time = np.asarray(run.engine["state"].time)
    assert time.shape == (N,) and (time <= 3 * T).all() and time.max() > 0  # warm-up + 2 calls


def test_gymnax_autoresets():
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    run, _ = env_peers.make_peer_stepper("gymnax-metamaze", N, 120)  # episodes last 200 steps at most
    run()
    assert (np.asarray(run.engine["state"].time) < 200).all()


def test_gymnax_collect_obs():
    pytest.importorskip("jax")
    pytest.importorskip("gymnax")
    run, env_steps = env_peers.make_peer_stepper("gymnax-fourrooms", N, T, collect_obs=True, seed=1)
    assert env_steps == N * T and run.detail["collect_obs"]
    run()


def test_minigrid_peer_runs():
    pytest.importorskip("minigrid")
    assert env_peers.peer_unavailable("minigrid") is None
    run, env_steps = env_peers.make_peer_stepper("minigrid", N, T)
    _check(run, env_steps, "minigrid")
    assert run.detail["env"] == env_peers.MINIGRID_DEFAULT_ENV
    assert [e.unwrapped.step_count for e in run.engine.envs] == [3 * T] * N
    run.close()


def test_minigrid_env_id_and_autoreset():
    pytest.importorskip("minigrid")
    run, env_steps = env_peers.make_peer_stepper("minigrid", 2, 150, env_id="MiniGrid-Empty-5x5-v0")
    assert run.detail["env"] == "MiniGrid-Empty-5x5-v0" and env_steps == 300
    run()  # 300 steps; MiniGrid-Empty-5x5 truncates at 100
    assert all(e.unwrapped.step_count <= 100 for e in run.engine.envs)
    run.close()


class _Counter(gym.Env):
    """Episodes of 2 steps; counts its steps and resets and records its actions."""

    observation_space = gym.spaces.Discrete(3)
    action_space = gym.spaces.Discrete(5)

    def __init__(self):
        self.t = self.steps = self.resets = 0
        self.actions = set()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.resets += 1
        return 0, {}

    def step(self, action):
        assert self.action_space.contains(action)
        self.actions.add(int(action))
        self.t += 1
        self.steps += 1
        return self.t, 0.0, self.t == 2, False, {}


def test_gym_sync_peer_steps_and_autoresets():
    run, env_steps = env_peers.make_peer_stepper("gym-sync", N, 30, env_fn=_Counter)
    assert env_steps == N * 30
    run()
    for env in run.engine.envs:
        # NEXT_STEP autoreset: every third call resets instead of stepping; 60 calls in all
        assert env.steps == 40 and env.resets == 1 + 20
        assert len(env.actions) > 1
    run.close()


def test_make_sync_stepper_direct_with_num_actions():
    run, env_steps = env_peers.make_sync_stepper(_Counter, N, T, num_actions=2)
    assert env_steps == N * T
    run()
    assert all(env.actions <= {0, 1} for env in run.engine.envs)


def test_describe_peer():
    for name in env_peers.PEERS:
        assert isinstance(env_peers.describe_peer(name), str)
