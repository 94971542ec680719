"""The C++ kernels that share work between OpenMP threads by static ranges with stealing
(cpp/common/work_claims.h: the oracle's groups of tasks, the environment driver's chunks of
environments, the MetODS synapse forward's sequences) give bit-for-bit the same results whatever the
thread count and whichever thread ends up running an item. More threads than cores (3 and 5 on a
2-core machine), and a run beside a process that keeps one core busy, make threads fall behind so
that the others take over part of their ranges; every item must still be run exactly once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import metakern
import pytest
import torch
from metakern import oracle
from metakern.envs.krazy import KrazyWorld
from metakern.ops.synapse import metods_synapse

THREADS = (1, 2, 3, 5)


@contextlib.contextmanager
def threads(n: int):
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


_SPIN = """
import os, sys
try:
    os.sched_setaffinity(0, {int(sys.argv[1])})
except (AttributeError, OSError):
    pass
while True:
    pass
"""


@contextlib.contextmanager
def busy_core():
    """A process spinning on one of this process's cores for the block's duration (on any core
    where the affinity cannot be set)."""
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    proc = subprocess.Popen([sys.executable, "-c", _SPIN, str(cpu)])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def oracle_outputs(B: int, S: int, A: int):
    mdp = oracle.random_mdps(B, S, A, gamma=0.8, seed=B)
    theta = torch.randn(B, S, A, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with metakern.use_backend("cpp"):
        out = oracle.maml_meta_gradient(mdp, theta, 10.0, 3)
    return [out.meta_gradient, out.objective, *out.thetas]


def krazy_outputs(B: int, steps: int):
    env = KrazyWorld(B, seed=4, backend="cpp")
    g = torch.Generator().manual_seed(5)
    outs = [env.reset()]
    for _ in range(steps):
        a = torch.randint(0, env.family.num_actions, (B,), generator=g, dtype=torch.int32)
        r = env.step(a)
        outs += [r.obs, r.reward, r.terminated, r.truncated]
    return outs


def synapse_outputs():
    g = torch.Generator().manual_seed(6)
    B, T, N, S = 13, 40, 32, 2  # above the kernel's serial threshold: the forward runs on a thread team
    v0 = torch.randn(B, T, N, generator=g, dtype=torch.float64)
    W0 = 0.3 * torch.randn(B, N, N, generator=g, dtype=torch.float64)
    alpha = 0.3 * torch.randn(N, N, generator=g, dtype=torch.float64)
    kappa = 0.4 * torch.randn(S, S + 1, generator=g, dtype=torch.float64)
    beta = 0.4 * torch.randn(S, S + 1, generator=g, dtype=torch.float64)
    reset = torch.rand(B, T, generator=g) < 0.1
    with metakern.use_backend("cpp"):
        return list(metods_synapse(v0, W0, alpha, kappa, beta, reset))


CASES = {
    "oracle-fixed-size": lambda: oracle_outputs(203, 20, 5),  # the AVX-512 fast path where there is one
    "oracle-generic": lambda: oracle_outputs(77, 7, 3),
    "krazy-env": lambda: krazy_outputs(1100, 12),  # 5 chunks of 256 environments, the last partial
    "synapse-forward": synapse_outputs,
}


def assert_identical(got, expected, what):
    assert len(got) == len(expected)
    for i, (a, e) in enumerate(zip(got, expected, strict=True)):
        assert a.shape == e.shape and a.dtype == e.dtype, f"{what}: output {i}"
        assert torch.equal(a, e), f"{what}: output {i} differs"


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_do_not_depend_on_the_thread_count(case):
    run = CASES[case]
    with threads(1):
        expected = run()
    for n in THREADS[1:]:
        with threads(n):
            assert_identical(run(), expected, f"{case} on {n} threads")


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_do_not_depend_on_a_busy_core(case):
    run = CASES[case]
    with threads(1):
        expected = run()
    with busy_core(), threads(2):
        for _ in range(3):
            assert_identical(run(), expected, f"{case} beside a busy core")
