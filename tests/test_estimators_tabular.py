"""Closed-form gradients and HVPs of the estimator objectives for a tabular softmax policy
(metakern.estimators.tabular) against autograd through the reference objectives."""

import metakern
import pytest
import torch
from conftest import at_isa_levels, backend_param
from metakern.estimators import reference as est
from metakern.estimators.tabular import tabular_derivatives

CASES = [("dice", 1.0), ("loaded_dice", 1.0), ("loaded_dice", 0.5), ("loaded_dice", 0.0), ("lvc", 1.0)]


def problem(B=5, T=11, S=4, A=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(S, A, generator=g, dtype=torch.float64)
    states = torch.randint(0, S, (B, T), generator=g)
    actions = torch.randint(0, A, (B, T), generator=g)
    signal = torch.randn(B, T, generator=g, dtype=torch.float64)
    v = torch.randn(S, A, generator=g, dtype=torch.float64)
    return theta, states, actions, signal, v


def reference_objective(name, lam, states, actions, signal, gamma):
    def J(theta):
        logp = torch.log_softmax(theta, -1)[states, actions]
        if name == "dice":
            return est.dice(logp, signal, gamma)
        if name == "loaded_dice":
            return est.loaded_dice(logp, signal, gamma, lam)
        return est.lvc(logp, signal, gamma)

    return J


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpp", "reference")])
@pytest.mark.parametrize(("name", "lam"), CASES)
@pytest.mark.parametrize("shape", [(5, 11, 4, 3), (1, 1, 2, 2), (3, 40, 6, 5)])
def test_matches_autograd(name, lam, shape, backend):
    theta, states, actions, signal, v = problem(*shape, seed=sum(shape))
    J = reference_objective(name, lam, states, actions, signal, 0.9)
    with metakern.use_backend(backend):
        d = tabular_derivatives(name, theta, states, actions, v, signal, 0.9, lam)
    S, A = theta.shape
    H = torch.func.hessian(J)(theta).reshape(S * A, S * A)
    torch.testing.assert_close(d.value, J(theta), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.grad, torch.func.grad(J)(theta), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.hvp.reshape(-1), H @ v.reshape(-1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpp", "reference")])
def test_int32_indices(backend):
    theta, states, actions, signal, v = problem(B=6, T=30, S=5, A=4, seed=3)
    with metakern.use_backend(backend):
        wide = tabular_derivatives("dice", theta, states, actions, v, signal, 0.9)
        narrow = tabular_derivatives("dice", theta, states.int(), actions.int(), v, signal, 0.9)
    for x, y in zip(wide, narrow, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpp", "reference")])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("name", ["dice", "loaded_dice", "lvc"])
def test_out_of_range_index_is_reported(backend, dtype, name):
    theta, states, actions, signal, v = problem(B=6, T=30, S=5, A=4, seed=3)
    states, actions = states.to(dtype), actions.to(dtype)
    bad_s, bad_a = states.clone(), actions.clone()
    bad_s[4, 17] = 5
    bad_a[2, 3] = -1
    with metakern.use_backend(backend):
        with pytest.raises(ValueError, match=r"states: expected indices in \[0, 5\), got .*5"):
            tabular_derivatives(name, theta, bad_s, actions, v, signal, 0.9)
        with pytest.raises(ValueError, match=r"actions: expected indices in \[0, 4\), got .*-1"):
            tabular_derivatives(name, theta, states, bad_a, v, signal, 0.9)


def test_bad_inputs():
    theta, states, actions, signal, v = problem()
    with pytest.raises(ValueError, match="estimator: expected one of"):
        tabular_derivatives("reinforce", theta, states, actions, v, signal, 0.9)
    with pytest.raises(ValueError, match=r"states: expected indices in \[0, 4\)"):
        tabular_derivatives("dice", theta, states + 4, actions, v, signal, 0.9)
    with pytest.raises(ValueError, match=r"actions: expected indices in \[0, 3\)"):
        tabular_derivatives("dice", theta, states, actions - 1, v, signal, 0.9)
    with pytest.raises(ValueError, match="signal: expected shape"):
        tabular_derivatives("dice", theta, states, actions, v, signal[:, :3], 0.9)
    with pytest.raises(TypeError, match="states: expected"):
        tabular_derivatives("dice", theta, states.double(), actions, v, signal, 0.9)


@pytest.mark.parametrize(("name", "lam"), CASES)
def test_cpp_kernel_is_deterministic(name, lam):
    theta, states, actions, signal, v = problem(B=37, T=50, S=6, A=4, seed=9)
    with metakern.use_backend("cpp"):
        first = tabular_derivatives(name, theta, states, actions, v, signal, 0.97, lam)
        for _ in range(3):
            again = tabular_derivatives(name, theta, states, actions, v, signal, 0.97, lam)
            assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))


def test_portable_path_matches_the_avx512_one():
    """METAKERN_MAX_ISA=avx2 (read once per process) forces the portable forward pass of the DiCE
    kernel; it must give the same numbers as the AVX-512 path, out-of-range checks included."""
    script = (
        "import torch, sys\n"
        "from metakern.estimators.tabular import tabular_derivatives\n"
        "g = torch.Generator().manual_seed(5)\n"
        "theta = torch.randn(6, 4, generator=g, dtype=torch.float64)\n"
        "s = torch.randint(0, 6, (9, 37), generator=g); a = torch.randint(0, 4, (9, 37), generator=g)\n"
        "sig = torch.randn(9, 37, generator=g, dtype=torch.float64)\n"
        "v = torch.randn(6, 4, generator=g, dtype=torch.float64)\n"
        "out = [torch.stack([t.reshape(-1) for t in [d.grad, d.hvp]]) for d in"
        " [tabular_derivatives(n, theta, s, a, v, sig, 0.9, 0.7) for n in ('dice', 'loaded_dice', 'lvc')]]\n"
        "s[3, 30] = 6\n"
        "try:\n    tabular_derivatives('dice', theta, s, a, v, sig, 0.9)\nexcept ValueError as e:\n    print(e)\n"
        "torch.save(out, sys.argv[1])\n"
    )
    results = {}
    for level, (stdout, out) in at_isa_levels(script, ("avx512", "avx2")).items():
        assert "states: expected indices in [0, 6), got 6 at [3, 30]" in stdout
        results[level] = out
    for x, y in zip(results["avx512"], results["avx2"], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-13)
