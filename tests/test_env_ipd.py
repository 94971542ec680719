"""Iterated Prisoner's Dilemma: compiled kernels vs the numpy reference, rules, the exact value
against Monte Carlo and a power series, bad input."""

import numpy as np
import pytest
import torch
from env_testing import run_lockstep
from metakern.envs.ipd import IPD, LOLA_PAYOFF, IPDFamily, ipd_exact_value

MODES = ("next_step", "same_step", "disabled")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("obs", ["one_hot", "index"])
def test_cpp_matches_reference(mode, obs):
    payoffs = np.random.default_rng(0).normal(size=(3, 2, 2)).astype(np.float32)

    def make(backend):
        return IPD(
            32,
            payoff=payoffs,
            obs=obs,
            max_steps=7,
            episodes_per_trial=3,
            explore_episodes=1,
            autoreset_mode=mode,
            seed=2,
            backend=backend,
        )

    run_lockstep(make("reference"), make("cpp"), 150, seed=1)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_rules(backend):
    env = IPD(4, backend=backend)
    obs = env.observe()
    assert obs.shape == (4, 2, 5) and obs.dtype == torch.float32
    assert (obs[:, :, 0] == 1).all() and obs.sum().item() == 8  # both agents start in state 0
    joint = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    r = env.step(joint)
    # payoff[own, other] = [[-2, 0], [-3, -1]]
    assert r.reward.tolist() == [[-2.0, -2.0], [0.0, -3.0], [-3.0, 0.0], [-1.0, -1.0]]
    assert r.obs[:, 0].argmax(-1).tolist() == [1, 2, 3, 4]  # 1 + 2 a1 + a2
    assert r.obs[:, 1].argmax(-1).tolist() == [1, 3, 2, 4]  # agent 2: own action first
    assert env.prev_action.tolist() == [0, 0, 1, 1] and env.prev_reward.tolist() == [-2.0, 0.0, -3.0, -1.0]
    idx = IPD(4, obs="index", backend=backend)
    assert idx.step(joint).obs.tolist() == [[1.0, 1.0], [2.0, 3.0], [3.0, 2.0], [4.0, 4.0]]
    for _ in range(98):
        r = env.step(joint)
        assert not r.terminated.any() and not r.truncated.any()
    r = env.step(joint)  # step 100: the time limit
    assert r.truncated.all() and not r.terminated.any()
    assert (env.step(joint).obs[:, :, 0] == 1).all()  # next-step autoreset: back to the start state


def test_custom_payoff_pool():
    pay = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    env = IPD(2, payoff=pay, resample_tasks=False)
    env.set_tasks(torch.tensor([0, 1]))
    r = env.step(torch.tensor([[0, 1], [0, 1]]))
    assert r.reward.tolist() == [[2.0, 3.0], [6.0, 7.0]]


def _power_series_value(theta1, theta2, gamma, payoff, steps):
    """sum_t gamma^t E[r_t] by propagating the state distribution (independent of the closed form)."""
    p1 = torch.sigmoid(theta1)
    p2 = torch.sigmoid(theta2)
    view2 = [0, 1, 3, 2, 4]
    dist = torch.zeros(5, dtype=torch.float64)
    dist[0] = 1.0
    value = torch.zeros(2, dtype=torch.float64)
    for t in range(steps):
        new = torch.zeros(5, dtype=torch.float64)
        for s in range(5):
            for a1 in range(2):
                for a2 in range(2):
                    pa1 = p1[s] if a1 == 0 else 1 - p1[s]
                    pa2 = p2[view2[s]] if a2 == 0 else 1 - p2[view2[s]]
                    w = dist[s] * pa1 * pa2
                    value += gamma**t * w * torch.stack((payoff[a1, a2], payoff[a2, a1]))
                    new[1 + 2 * a1 + a2] += w
        dist = new
    return value


def test_exact_value_closed_form():
    g = torch.Generator().manual_seed(0)
    t1, t2 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    pay = torch.tensor(LOLA_PAYOFF, dtype=torch.float64)
    v = ipd_exact_value(t1, t2, 0.96)
    assert v.shape == (2,) and v.dtype == torch.float64
    assert torch.allclose(v, _power_series_value(t1, t2, 0.96, pay, 900), atol=1e-9)
    assert torch.allclose(ipd_exact_value(t1, t2, 0.9, horizon=30), _power_series_value(t1, t2, 0.9, pay, 30))
    # roles: agent 2's value is agent 1's value with the agents swapped
    assert torch.allclose(ipd_exact_value(t2, t1, 0.96).flip(0), v)
    # uniform policies: every joint action has probability 1/4, mean payoff -1.5
    assert torch.allclose(
        ipd_exact_value(torch.zeros(5), torch.zeros(5)), torch.tensor([-37.5, -37.5], dtype=torch.float64)
    )
    # batched, and differentiable twice
    tb = torch.randn(3, 5, generator=g, dtype=torch.float64)
    vb = ipd_exact_value(tb, t2, 0.96)
    assert vb.shape == (3, 2) and torch.allclose(vb[1], ipd_exact_value(tb[1], t2, 0.96))
    x = torch.randn(10, generator=g, dtype=torch.float64, requires_grad=True)

    def f(z):
        return ipd_exact_value(z[:5], z[5:], 0.96, horizon=50)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_exact_value_vs_monte_carlo():
    B, T, gamma = 8192, 100, 0.96
    g = torch.Generator().manual_seed(3)
    theta1 = torch.randn(5, generator=g, dtype=torch.float64)
    theta2 = torch.randn(5, generator=g, dtype=torch.float64)
    env = IPD(B, obs="index", seed=1)
    obs = env.observe()
    ret = torch.zeros(B, 2, dtype=torch.float64)
    p1, p2 = torch.sigmoid(theta1), torch.sigmoid(theta2)
    for t in range(T):
        s1, s2 = obs[:, 0].long(), obs[:, 1].long()
        a1 = (torch.rand(B, generator=g, dtype=torch.float64) >= p1[s1]).int()  # P(action 0) = sigmoid
        a2 = (torch.rand(B, generator=g, dtype=torch.float64) >= p2[s2]).int()
        r = env.step(torch.stack((a1, a2), dim=1))
        ret += gamma**t * r.reward.double()
        obs = r.obs
    assert r.truncated.all()
    exact = ipd_exact_value(theta1, theta2, gamma, horizon=T)
    se = ret.std(0) / B**0.5
    assert ((ret.mean(0) - exact).abs() < 5 * se).all(), (ret.mean(0), exact, se)
    # the infinite-horizon value differs by the tail gamma^T V
    assert (ipd_exact_value(theta1, theta2, gamma) - exact).abs().min() > 5 * se.max()


def test_bad_input():
    for backend in ("reference", "cpp"):
        env = IPD(4, backend=backend)
        env.step(torch.ones(4, 2, dtype=torch.int32))
        before = {k: v.clone() for k, v in {**env.state, **env.bk}.items()}
        for bad in (torch.tensor([[0, 0], [0, 2], [0, 0], [1, 1]]), torch.full((4, 2), -1)):
            with pytest.raises(ValueError, match="action out of range"):
                env.step(bad)
        for k, v in {**env.state, **env.bk}.items():
            assert torch.equal(v, before[k]), k
        with pytest.raises(ValueError):
            env.step(torch.zeros(4, dtype=torch.int32))  # needs [B, 2]
    with pytest.raises(ValueError):
        IPD(2, payoff=[[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError):
        IPD(2, payoff=[[1.0, float("inf")], [0.0, 0.0]])
    with pytest.raises(ValueError):
        IPD(2, obs="pixels")
    with pytest.raises(ValueError):
        ipd_exact_value(torch.zeros(4), torch.zeros(5))
    with pytest.raises(TypeError):
        ipd_exact_value(torch.zeros(5, dtype=torch.int64), torch.zeros(5))
    with pytest.raises(ValueError):
        ipd_exact_value(torch.zeros(5), torch.zeros(5), gamma=1.0)
    with pytest.raises(ValueError):
        ipd_exact_value(torch.zeros(5), torch.zeros(5), horizon=0)


def test_spaces_and_render():
    env = IPD(2)
    fam = env.family
    assert isinstance(fam, IPDFamily)
    env.step(torch.tensor([[0, 1], [1, 1]]))
    assert fam.single_observation_space().contains(env.observe()[0].numpy())
    S, _, P = env._numpy_views()
    img = fam.render_rgb(S, P, 0, 0)
    assert img.dtype == np.uint8 and img.shape[2] == 3


@pytest.mark.cuda
def test_cuda_matches_cpp():
    cpu = IPD(4096, max_steps=9, backend="cpp")
    gpu = IPD(4096, max_steps=9, device="cuda", backend="cuda")
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        a = torch.randint(0, 2, (4096, 2), generator=g, dtype=torch.int32)
        ra, rb = cpu.step(a), gpu.step(a.cuda())
        for x, y in zip(tuple(ra)[:4], tuple(rb)[:4], strict=True):
            assert torch.equal(x, y.cpu())
