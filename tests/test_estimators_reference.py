"""The reference estimator objectives against exact derivatives, with no sampling noise: every
trajectory of a tiny finite-horizon MDP is enumerated and weighted by its (detached) probability,
so E[d est] and E[d^2 est] are exact sums, compared with the derivatives of the true objective
J(theta) = sum_tau p(tau; theta) R(tau). This checks the papers' claims (shared/spec/estimators.md
section 1): DiCE, DiCE with baseline, Loaded DiCE (lambda = 1), TayPO-2/3 and DR are unbiased to
second order on-policy; the MAML surrogate, LVC, Loaded DiCE (lambda = 0) and TayPO-1 have unbiased
gradients and biased Hessians; off-policy DiCE and DR stay exact under another behaviour policy."""

import itertools

import pytest
import torch
from metakern.estimators import reference as est

S, A, T, GAMMA = 2, 2, 3, 0.9


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(0)
    P = torch.rand(S, A, S, generator=g, dtype=torch.float64) + 0.1
    P = P / P.sum(-1, keepdim=True)
    R = torch.randn(S, A, generator=g, dtype=torch.float64)
    init = torch.tensor([0.3, 0.7], dtype=torch.float64)
    theta = torch.randn(S, A, generator=g, dtype=torch.float64)
    V = torch.randn(S, generator=g, dtype=torch.float64)  # any state-dependent baseline
    steps = list(itertools.product(range(S), range(A)))
    trajs = torch.tensor(list(itertools.product(steps, repeat=T)))  # [N, T, 2]: (s_t, a_t)
    return P, R, init, theta, V, trajs


def log_policy(theta):
    return torch.log_softmax(theta, dim=-1)


def trajectory_log_probs(theta, P, init, trajs):
    s, a = trajs[..., 0], trajs[..., 1]
    logp = log_policy(theta)[s, a]  # [N, T]
    dyn = torch.log(init[s[:, 0]]) + torch.log(P[s[:, :-1], a[:, :-1], s[:, 1:]]).sum(1)
    return logp, logp.sum(1) + dyn


def exact_objective(world):
    P, R, init, _, _, trajs = world
    rewards = R[trajs[..., 0], trajs[..., 1]]
    ret = (rewards * GAMMA ** torch.arange(T, dtype=torch.float64)).sum(1)

    def J(theta):
        _, log_p = trajectory_log_probs(theta, P, init, trajs)
        return (log_p.exp() * ret).sum()

    return J


def expected(world, surrogate, behaviour_theta=None):
    """theta -> E_tau[surrogate], the expectation over trajectories drawn from the behaviour policy
    (softmax(behaviour_theta), default: the current policy at the fixture's theta, detached). Every
    surrogate is linear in its reward-like inputs, so weighting a trajectory's inputs by N p(tau)
    turns the batch mean into the exact expectation."""
    P, R, init, theta0, V, trajs = world
    rewards = R[trajs[..., 0], trajs[..., 1]]
    N = trajs.shape[0]
    disc = GAMMA ** torch.arange(T, dtype=torch.float64)
    to_go = torch.flip(torch.cumsum(torch.flip(rewards * disc, [1]), 1), [1]) / disc  # G_t
    behaviour = theta0 if behaviour_theta is None else behaviour_theta
    mu_logp, mu_log_p = trajectory_log_probs(behaviour, P, init, trajs)
    weight = (N * mu_log_p.exp()).detach()[:, None]
    values = V[trajs[..., 0]]

    def E(theta):
        logp, _ = trajectory_log_probs(theta, P, init, trajs)
        return surrogate(logp, weight * rewards, weight * to_go, weight * values, mu_logp.detach())

    return E


SURROGATES = {  # name: (surrogate, unbiased Hessian on-policy)
    "dice": (lambda l, r, G, V, mu: est.dice(l, r, GAMMA), True),
    "dice_baseline": (lambda l, r, G, V, mu: est.dice_baseline(l, r, V, GAMMA), True),
    "loaded_dice_lam1": (lambda l, r, G, V, mu: est.loaded_dice(l, G, GAMMA, 1.0), True),
    "taypo2": (lambda l, r, G, V, mu: est.taypo(l, mu, G, V, GAMMA, 2), True),
    "taypo3": (lambda l, r, G, V, mu: est.taypo(l, mu, G, V, GAMMA, 3), True),
    "doubly_robust": (lambda l, r, G, V, mu: est.doubly_robust(l, mu, r, V, GAMMA), True),
    "off_policy_dice": (lambda l, r, G, V, mu: est.off_policy_dice(l, mu, r, GAMMA), True),
    "maml_surrogate": (lambda l, r, G, V, mu: est.maml_surrogate(l, G, GAMMA), False),
    "lvc": (lambda l, r, G, V, mu: est.lvc(l, G, GAMMA), False),
    "loaded_dice_lam0": (lambda l, r, G, V, mu: est.loaded_dice(l, G, GAMMA, 0.0), False),
    "taypo1": (lambda l, r, G, V, mu: est.taypo(l, mu, G, V, GAMMA, 1), False),
}


@pytest.mark.parametrize("name", list(SURROGATES))
def test_expected_gradient_and_hessian_against_the_truth(world, name):
    surrogate, unbiased_hessian = SURROGATES[name]
    theta = world[3]
    J = exact_objective(world)
    E = expected(world, surrogate)
    torch.testing.assert_close(torch.func.grad(E)(theta), torch.func.grad(J)(theta), rtol=1e-10, atol=1e-12)
    H_est, H_true = torch.func.hessian(E)(theta), torch.func.hessian(J)(theta)
    if unbiased_hessian:
        torch.testing.assert_close(H_est, H_true, rtol=1e-10, atol=1e-12)
    else:
        assert (H_est - H_true).abs().max() > 1e-3 * H_true.abs().max()


@pytest.mark.parametrize("other", ["loaded_dice_lam0", "taypo1"])
def test_lvc_like_estimators_have_the_same_expected_hessian(world, other):
    theta = world[3]
    H_lvc = torch.func.hessian(expected(world, SURROGATES["lvc"][0]))(theta)
    H_other = torch.func.hessian(expected(world, SURROGATES[other][0]))(theta)
    torch.testing.assert_close(H_lvc, H_other, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["off_policy_dice", "doubly_robust"])
def test_off_policy_estimators_are_exact_under_another_behaviour_policy(world, name):
    """Trajectories drawn from mu != pi, importance weighted: still the exact derivatives under pi."""
    theta = world[3]
    mu = theta + torch.tensor([[0.8, -0.5], [-0.3, 0.6]], dtype=torch.float64)
    E = expected(world, SURROGATES[name][0], behaviour_theta=mu)
    J = exact_objective(world)
    torch.testing.assert_close(E(theta), J(theta), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.func.grad(E)(theta), torch.func.grad(J)(theta), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.func.hessian(E)(theta), torch.func.hessian(J)(theta), rtol=1e-10, atol=1e-12)


def test_taypo_off_policy_bias_falls_with_the_order_and_vanishes_at_the_horizon(world):
    """Away from mu, TayPO-K carries the Taylor residual (Tang, Prop. 3.4): the bias of the gradient
    and Hessian falls with K, and at K = T it is gone, because a product of (rho_t - 1) over distinct
    steps has at most T factors: TayPO-T is the full importance-sampling estimate."""
    theta = world[3]
    mu = theta + torch.tensor([[0.8, -0.5], [-0.3, 0.6]], dtype=torch.float64)
    J = exact_objective(world)
    g_true, H_true = torch.func.grad(J)(theta), torch.func.hessian(J)(theta)
    biases = []
    for order in range(1, T + 1):
        E = expected(world, lambda l, r, G, V, m, K=order: est.taypo(l, m, G, V, GAMMA, K), behaviour_theta=mu)
        g_bias = (torch.func.grad(E)(theta) - g_true).abs().max().item()
        H_bias = (torch.func.hessian(E)(theta) - H_true).abs().max().item()
        biases.append((g_bias, H_bias))
    for (g1, h1), (g2, h2) in itertools.pairwise(biases[:-1]):
        assert g2 < g1 / 5 and h2 < h1 / 5
    assert min(biases[-2]) > 1e-8  # K = T - 1 is still biased
    assert max(biases[-1]) < 1e-12  # K = T is exact


def test_special_cases_of_the_recursion():
    """DR with V = 0 is step-wise IS (DiCE), on- and off-policy; off-policy DiCE with mu = pi is DiCE."""
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax(theta, -1)
    mu = (logp + 0.3 * torch.randn(4, 6, generator=g, dtype=torch.float64)).detach()
    r = torch.randn(4, 6, generator=g, dtype=torch.float64)
    zero = torch.zeros_like(r)
    for a, b in [
        (est.doubly_robust(logp, mu, r, zero, 0.9), est.off_policy_dice(logp, mu, r, 0.9)),
        (est.off_policy_dice(logp, logp.detach(), r, 0.9), est.dice(logp, r, 0.9)),
    ]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        ga, gb = (
            torch.autograd.grad(a, theta, create_graph=True)[0],
            torch.autograd.grad(b, theta, create_graph=True)[0],
        )
        torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
        v = torch.randn_like(theta)
        hva = torch.autograd.grad((ga * v).sum(), theta, retain_graph=True)[0]
        hvb = torch.autograd.grad((gb * v).sum(), theta, retain_graph=True)[0]
        torch.testing.assert_close(hva, hvb, rtol=1e-11, atol=1e-12)


def test_huge_log_ratios_are_clipped_in_log_space():
    logp = torch.full((2, 3), 800.0, dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(2, 3, dtype=torch.float64)
    out = est.doubly_robust(logp, mu, torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64),
                            0.9, rho_max=1.0, c_max=1.0)  # fmt: skip
    assert torch.isfinite(out)
    torch.testing.assert_close(out, torch.tensor(1 + 0.9 + 0.81, dtype=torch.float64))


def test_values_of_the_surrogates():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(4, 5, generator=g, dtype=torch.float64)
    r, V = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    disc = 0.9 ** torch.arange(5, dtype=torch.float64)
    mc = (r * disc).sum(1).mean()
    torch.testing.assert_close(est.dice(logp, r, 0.9), mc)  # magic boxes are 1 in value
    torch.testing.assert_close(est.dice_baseline(logp, r, V, 0.9), mc)  # the baseline term is 0 in value
    torch.testing.assert_close(est.loaded_dice(logp, r, 0.9, 0.5), torch.zeros((), dtype=torch.float64))


def test_bad_inputs():
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="rewards: expected shape"):
        est.dice(logp, torch.zeros(2, 4), 0.9)
    with pytest.raises(ValueError, match="gamma: expected a value <= 1"):
        est.lvc(logp, torch.zeros(2, 3), 1.5)
    with pytest.raises(ValueError, match="lam: expected a value >= 0"):
        est.loaded_dice(logp, torch.zeros(2, 3), 0.9, -0.1)
    with pytest.raises(ValueError, match="logp: expected a 2-D tensor"):
        est.maml_surrogate(torch.zeros(3), torch.zeros(3), 0.9)
    with pytest.raises(ValueError, match="order: expected a positive int"):
        est.taypo(logp, logp, logp, logp, 0.9, 0)
