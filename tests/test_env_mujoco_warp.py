"""The optional MuJoCo Warp path (``backend="warp"``), on Warp's CPU device (or a GPU if present).

Runs where ``mujoco-warp`` is installed (``pip install mujoco-warp``); the first run compiles
Warp's kernels (about a minute on 2 cores, cached afterwards in ~/.cache/warp).
MuJoCo Warp computes in float32 and its contact solver is not C MuJoCo's, so trajectories agree
with the C backends to float32 precision until the first contacts, and drift apart afterwards.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")
pytest.importorskip("mujoco_warp")

from metakern.envs.mujoco import MujocoBatchedEnv

pytestmark = pytest.mark.slow


def _pair(task, B, **kw):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = MujocoBatchedEnv(task, B, seed=3, **kw)
    return ref, MujocoBatchedEnv(task, B, seed=3, backend="warp", device=device, **kw)


def test_warp_matches_c_mujoco_before_contact():
    ref, warp = _pair("HalfCheetahVel", 3)
    np.testing.assert_allclose(warp.observe().cpu().numpy(), ref.observe().numpy(), atol=1e-6)
    np.testing.assert_array_equal(warp.task_params, ref.task_params)
    rng = np.random.default_rng(0)
    for _ in range(2):
        a = rng.uniform(-1, 1, (3, ref.act_dim))
        r1, r2 = ref.step(a), warp.step(a)
        np.testing.assert_allclose(r2.obs.cpu().numpy(), r1.obs.numpy(), atol=1e-3)
        np.testing.assert_allclose(r2.reward.cpu().numpy(), r1.reward.numpy(), atol=1e-4)


def test_warp_per_world_dynamics_and_resets():
    ref, warp = _pair("HalfCheetahMassDamping", 2, max_steps=2)
    params = np.array([[0.5, 1.5], [1.5, 0.5]])
    o1, o2 = ref.set_tasks(params), warp.set_tasks(params)
    np.testing.assert_allclose(o2.cpu().numpy(), o1.numpy(), atol=1e-6)
    a = np.full((2, ref.act_dim), 0.5)
    r1, r2 = ref.step(a), warp.step(a)
    np.testing.assert_allclose(r2.obs.cpu().numpy(), r1.obs.numpy(), atol=1e-3)
    # the two worlds run different masses: identical actions give different motion
    assert np.abs(r2.obs[0].cpu().numpy() - r2.obs[1].cpu().numpy()).max() > 1e-4
    ref.step(a), warp.step(a)  # time limit: both truncate
    r1, r2 = ref.step(a), warp.step(a)  # NEXT_STEP: the reset step
    assert not r2.truncated.any() and (r2.reward == 0).all()
    np.testing.assert_allclose(r2.obs.cpu().numpy(), r1.obs.numpy(), atol=1e-6)
