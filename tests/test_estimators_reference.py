"""The reference estimator objectives against exact derivatives, with no sampling noise: every
trajectory of a tiny finite-horizon MDP is enumerated and weighted by its (detached) probability,
so E[d est] and E[d^2 est] are exact sums, compared with the derivatives of the true objective
J(theta) = sum_tau p(tau; theta) R(tau). This checks the papers' claims (shared/spec/estimators.md
section 1): DiCE, DiCE with baseline and Loaded DiCE (lambda = 1) are unbiased to second order;
the MAML surrogate, LVC and Loaded DiCE (lambda = 0) have unbiased gradients and biased Hessians."""

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


def expected(world, surrogate):
    """theta -> E_tau[surrogate], the expectation taken over the detached trajectory distribution.
    Every surrogate is linear in its reward-like inputs, so weighting a trajectory's inputs by
    N p(tau) turns the batch mean into the exact expectation."""
    P, R, init, theta0, V, trajs = world
    rewards = R[trajs[..., 0], trajs[..., 1]]
    N = trajs.shape[0]
    disc = GAMMA ** torch.arange(T, dtype=torch.float64)
    to_go = torch.flip(torch.cumsum(torch.flip(rewards * disc, [1]), 1), [1]) / disc  # G_t
    _, log_p = trajectory_log_probs(theta0, P, init, trajs)
    weight = (N * log_p.exp()).detach()[:, None]
    values = V[trajs[..., 0]]

    def E(theta):
        logp, _ = trajectory_log_probs(theta, P, init, trajs)
        return surrogate(logp, weight * rewards, weight * to_go, weight * values)

    return E


SURROGATES = {
    "dice": (lambda l, r, G, V: est.dice(l, r, GAMMA), True),
    "dice_baseline": (lambda l, r, G, V: est.dice_baseline(l, r, V, GAMMA), True),
    "loaded_dice_lam1": (lambda l, r, G, V: est.loaded_dice(l, G, GAMMA, 1.0), True),
    "maml_surrogate": (lambda l, r, G, V: est.maml_surrogate(l, G, GAMMA), False),
    "lvc": (lambda l, r, G, V: est.lvc(l, G, GAMMA), False),
    "loaded_dice_lam0": (lambda l, r, G, V: est.loaded_dice(l, G, GAMMA, 0.0), False),
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


def test_lvc_and_loaded_dice_lambda0_have_the_same_hessian(world):
    theta = world[3]
    H_lvc = torch.func.hessian(expected(world, SURROGATES["lvc"][0]))(theta)
    H_ld0 = torch.func.hessian(expected(world, SURROGATES["loaded_dice_lam0"][0]))(theta)
    torch.testing.assert_close(H_lvc, H_ld0, rtol=1e-10, atol=1e-12)


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
