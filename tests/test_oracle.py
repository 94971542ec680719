"""metakern.oracle: exact values, policy gradients, HVPs, Hessians and K-step MAML meta-gradients
of tabular softmax policies, against finite differences, iterative policy evaluation and
torch.func through direct solves."""

import metakern
import metakern.oracle as O
import pytest
import torch
from conftest import backend_param

ORACLE_BACKENDS = [backend_param(b) for b in ("cpp", "reference")]


def direct_objective(mdp, b):
    """J(theta) of task b by a direct linear solve (differentiable by torch.func)."""

    def J(theta):
        pi = torch.softmax(theta, -1)
        P_pi = torch.einsum("sa,sat->st", pi, mdp.P[b])
        r_pi = (pi * mdp.R[b]).sum(-1)
        eye = torch.eye(mdp.num_states, dtype=theta.dtype)
        return (mdp.init[b] * torch.linalg.solve(eye - mdp.gamma * P_pi, r_pi)).sum()

    return J


@pytest.fixture(scope="module")
def small():
    mdp = O.random_mdps(3, 6, 3, gamma=0.9, concentration=0.5, seed=1)
    theta = torch.randn(3, 6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return mdp, theta


def test_random_mdps_are_valid_and_reproducible():
    mdp = O.random_mdps(4, 20, 5, concentration=0.001, seed=7)
    assert mdp.P.shape == (4, 20, 5, 20) and mdp.P.dtype == torch.float64
    assert torch.isfinite(mdp.P).all() and (mdp.P >= 0).all()
    torch.testing.assert_close(mdp.P.sum(-1), torch.ones(4, 20, 5, dtype=torch.float64))
    assert mdp.P.max(-1).values.mean() > 0.9  # concentration 0.001: nearly deterministic
    assert torch.equal(mdp.init[:, 0], torch.ones(4, dtype=torch.float64))
    assert torch.equal(O.random_mdps(4, 20, 5, seed=7).P, mdp.P)
    assert not torch.equal(O.random_mdps(4, 20, 5, seed=8).P, mdp.P)


def test_values_match_iterative_policy_evaluation(small):
    mdp, theta = small
    ev = O.evaluate(mdp, theta)
    pi = torch.softmax(theta, -1)
    V = torch.zeros(3, 6, dtype=torch.float64)
    for _ in range(600):  # gamma = 0.9: contraction to 1e-27
        Q = mdp.R + mdp.gamma * torch.einsum("bsat,bt->bsa", mdp.P, V)
        V = (pi * Q).sum(-1)
    torch.testing.assert_close(ev.V, V, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ev.Q, Q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ev.objective, (mdp.init * V).sum(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((pi * ev.advantages).sum(-1), torch.zeros(3, 6, dtype=torch.float64), atol=1e-12, rtol=0)


def test_policy_gradient_matches_finite_differences_and_torch_func(small):
    mdp, theta = small
    g = O.policy_gradient(mdp, theta)
    eps = 1e-6
    for b in range(3):
        J = direct_objective(mdp, b)
        torch.testing.assert_close(g[b], torch.func.grad(J)(theta[b]), rtol=1e-10, atol=1e-12)
        fd = torch.zeros(6, 3, dtype=torch.float64)
        for s in range(6):
            for a in range(3):
                e = torch.zeros(6, 3, dtype=torch.float64)
                e[s, a] = eps
                fd[s, a] = (J(theta[b] + e) - J(theta[b] - e)) / (2 * eps)
        torch.testing.assert_close(g[b], fd, rtol=1e-6, atol=1e-8)


def test_hessian_and_hvp_match_torch_func(small):
    mdp, theta = small
    H = O.hessian(mdp, theta)
    v = torch.randn(3, 6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for b in range(3):
        expected = torch.func.hessian(direct_objective(mdp, b))(theta[b]).reshape(18, 18)
        torch.testing.assert_close(H[b], expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(H[b], H[b].T, rtol=0, atol=1e-13)
    hv = O.hvp(mdp, theta, v)
    torch.testing.assert_close(
        hv.reshape(3, 18), torch.einsum("bij,bj->bi", H, v.reshape(3, 18)), rtol=1e-10, atol=1e-12
    )
    many = O.hvp(mdp, theta, torch.stack([v, 2 * v], dim=1))  # K directions at once
    torch.testing.assert_close(many[:, 1], 2 * hv, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("backend", ORACLE_BACKENDS)
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_maml_meta_gradient_matches_unrolled_autograd(small, steps, backend):
    mdp, theta = small
    alpha = 0.7
    with metakern.use_backend(backend):
        out = O.maml_meta_gradient(mdp, theta, alpha, steps)
    assert len(out.thetas) == steps + 1
    for b in range(3):
        J = direct_objective(mdp, b)

        def adapted(t0, J=J):
            t = t0
            for _ in range(steps):
                t = t + alpha * torch.func.grad(J)(t)
            return J(t)

        torch.testing.assert_close(out.meta_gradient[b], torch.func.grad(adapted)(theta[b]), rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(out.objective[b], adapted(theta[b]), rtol=1e-12, atol=1e-12)


def test_float32_is_accepted():
    mdp = O.random_mdps(2, 5, 2, seed=3, dtype=torch.float32)
    g = O.policy_gradient(mdp, torch.zeros(2, 5, 2))
    assert g.dtype == torch.float32 and torch.isfinite(g).all()


def test_bad_inputs_raise_clear_errors(small):
    mdp, theta = small
    with pytest.raises(ValueError, match="P: every P"):
        O.TabularMDP(mdp.P * 2, mdp.R, mdp.init, 0.9)
    with pytest.raises(ValueError, match="gamma: expected a discount in"):
        O.TabularMDP(mdp.P, mdp.R, mdp.init, 1.0)
    with pytest.raises(ValueError, match="R: expected shape"):
        O.TabularMDP(mdp.P, mdp.R[:, :, :2], mdp.init, 0.9)
    with pytest.raises(ValueError, match="theta: expected shape"):
        O.evaluate(mdp, theta[:, :, :2])
    with pytest.raises(TypeError, match="theta: expected dtype"):
        O.evaluate(mdp, theta.float())
    with pytest.raises(ValueError, match="v: expected shape"):
        O.hvp(mdp, theta, theta[:, :2])
    with pytest.raises(ValueError, match="v: expected a tensor on cpu"):
        O.hvp(mdp, theta, theta.to("meta"))
    with pytest.raises(ValueError, match="steps: expected a non-negative int"):
        O.maml_meta_gradient(mdp, theta, 0.1, -1)
    with pytest.raises(TypeError, match="mdp: expected a TabularMDP"):
        O.evaluate("mdp", theta)
    with pytest.raises(ValueError, match="concentration"):
        O.random_mdps(2, 3, 2, concentration=0.0)


@pytest.mark.parametrize("shape", [(13, 20, 5), (8, 3, 2), (1, 7, 1), (9, 1, 4)])
@pytest.mark.parametrize("steps", [0, 2, 4])
def test_cpp_kernel_matches_the_torch_oracle(shape, steps):
    """The C++ kernel (8 tasks per SIMD vector; 13 and 9 tasks leave partial groups) against the
    torch linear algebra, at the study's sizes and with logits large enough to test the exp."""
    B, S, A = shape
    mdp = O.random_mdps(B, S, A, gamma=0.8, seed=B + S)
    theta = torch.randn(B, S, A, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 5
    with metakern.use_backend("cpp"):
        got = O.maml_meta_gradient(mdp, theta, 10.0, steps)
    with metakern.use_backend("reference"):
        expected = O.maml_meta_gradient(mdp, theta, 10.0, steps)
    scale = expected.meta_gradient.abs().max().clamp_min(1.0)
    torch.testing.assert_close(got.meta_gradient / scale, expected.meta_gradient / scale, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.objective, expected.objective, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.stack(got.thetas), torch.stack(expected.thetas), rtol=1e-12, atol=1e-10)


def test_raw_oracle_binding_rejects_bad_arguments():
    from metakern import _backend

    C = _backend.cpp_module()
    x = torch.zeros(8, dtype=torch.float64)
    p = x.data_ptr()
    with pytest.raises(ValueError, match="sizes must be positive"):
        C.oracle_maml_meta_gradient(p, p, p, p, 0, 2, 2, 0.5, 1.0, 1, p, p, p)
    with pytest.raises(ValueError, match="gamma must be in"):
        C.oracle_maml_meta_gradient(p, p, p, p, 1, 2, 2, 1.0, 1.0, 1, p, p, p)
    with pytest.raises(ValueError, match="null pointer for P"):
        C.oracle_maml_meta_gradient(0, p, p, p, 1, 2, 2, 0.5, 1.0, 1, p, p, p)


def test_sampled_returns_match_the_exact_finite_horizon_value():
    mdp = O.random_mdps(3, 5, 3, gamma=0.9, concentration=0.5, seed=4)
    theta = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    T, N = 8, 20000
    traj = O.sample_trajectories(mdp, theta, N, T, seed=3)
    assert traj.states.shape == (3, N, T) and traj.actions.max() < 3 and traj.states.max() < 5
    returns = (traj.rewards * 0.9 ** torch.arange(T, dtype=torch.float64)).sum(-1)  # [B, N]
    exact = O.finite_horizon_value(mdp, theta, T)
    stderr = returns.std(dim=1) / N**0.5
    assert ((returns.mean(1) - exact).abs() < 4 * stderr).all()
    torch.testing.assert_close(
        traj.logp, torch.log_softmax(theta, -1)[torch.arange(3)[:, None, None], traj.states, traj.actions]
    )
    again = O.sample_trajectories(mdp, theta, N, T, seed=3)
    assert torch.equal(again.states, traj.states) and torch.equal(again.actions, traj.actions)


def test_finite_horizon_value_tends_to_the_infinite_horizon_value():
    mdp = O.random_mdps(2, 6, 3, gamma=0.8, seed=5)
    theta = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(O.finite_horizon_value(mdp, theta, 400), O.evaluate(mdp, theta).objective)


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_meta_gradient_without_thetas(backend):
    mdp = O.random_mdps(11, 20, 5, seed=4)
    theta = torch.randn(11, 20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with metakern.use_backend(backend):
        full = O.maml_meta_gradient(mdp, theta, 2.0, 3)
        lean = O.maml_meta_gradient(mdp, theta, 2.0, 3, return_thetas=False)
    assert lean.thetas is None and len(full.thetas) == 4
    assert torch.equal(lean.meta_gradient, full.meta_gradient) and torch.equal(lean.objective, full.objective)
    with pytest.raises(TypeError, match="return_thetas"):
        O.maml_meta_gradient(mdp, theta, 2.0, 3, return_thetas=1)
