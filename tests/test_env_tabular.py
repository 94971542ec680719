"""Tabular MDPs (RL^2): compiled kernels vs the numpy reference, rules, task generation, exact
solutions against Monte Carlo, bad input."""

import numpy as np
import pytest
import torch
from env_testing import assert_same_step, run_lockstep
from metakern.envs.core import BatchedEnv
from metakern.envs.tabular import (
    TabularMDP,
    TabularMDPFamily,
    effective_transitions,
    normal_noise_table,
    tabular_tasks,
    transition_cdf,
)

MODES = ("next_step", "same_step", "disabled")


def _run_pair(make, steps: int, num_actions: int, seed: int = 0):
    run_lockstep(make("reference"), make("cpp"), steps, seed=seed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "start,obs,std", [("fixed", "one_hot", 1.0), ("uniform", "index", 0.5), ("uniform", "one_hot", 0.0)]
)
def test_cpp_matches_reference(mode, start, obs, std):
    def make(backend):
        return TabularMDP(
            24,
            num_states=6,
            num_actions=3,
            num_tasks=7,
            start_state=start,
            obs=obs,
            reward_std=std,
            max_steps=5,
            episodes_per_trial=3,
            explore_episodes=1,
            autoreset_mode=mode,
            seed=11,
            backend=backend,
        )

    _run_pair(make, 120, 3)


def test_cpp_matches_reference_task_range_and_set_tasks():
    fam = dict(num_states=4, num_actions=2, num_tasks=9, max_steps=3, episodes_per_trial=2, task_range=(2, 6))
    ref = TabularMDP(16, backend="reference", seed=5, **fam)
    cpp = TabularMDP(16, backend="cpp", seed=5, **fam)
    assert torch.equal(ref.set_tasks(torch.arange(16) % 9), cpp.set_tasks(torch.arange(16) % 9))
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        a = torch.randint(0, 2, (16,), generator=g)
        assert_same_step(ref.step(a), cpp.step(a))
    # every env has started new trials by now, and those draw from the task range only
    assert 2 <= int(cpp.tasks.min()) and int(cpp.tasks.max()) < 6


def _handcrafted(reward_std=0.0, start_state="fixed", obs="one_hot"):
    # 3 states, 2 actions: action 0 stays, action 1 moves to (s + 1) % 3; rewards 10 s + a
    P = np.zeros((1, 3, 2, 3))
    for s in range(3):
        P[0, s, 0, s] = 1.0
        P[0, s, 1, (s + 1) % 3] = 1.0
    R = np.array([[[0.0, 1.0], [10.0, 11.0], [20.0, 21.0]]])
    fam = TabularMDPFamily(transitions=P, reward_means=R, reward_std=reward_std, start_state=start_state, obs=obs)
    return fam


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_deterministic_rules(backend):
    env = BatchedEnv(_handcrafted(), 2, max_steps=4, backend=backend)
    obs = env.observe()
    assert obs.shape == (2, 3) and obs.dtype == torch.float32
    assert torch.equal(obs, torch.tensor([[1.0, 0, 0], [1, 0, 0]]))
    r = env.step(torch.tensor([1, 0]))
    assert r.reward.tolist() == [1.0, 0.0]
    assert r.obs.argmax(-1).tolist() == [1, 0]
    r = env.step(torch.tensor([1, 1]))
    assert r.reward.tolist() == [11.0, 1.0]
    assert r.obs.argmax(-1).tolist() == [2, 1]
    r = env.step(torch.tensor([1, 0]))
    assert r.reward.tolist() == [21.0, 10.0] and r.obs.argmax(-1).tolist() == [0, 1]
    assert not r.terminated.any() and not r.truncated.any()
    r = env.step(torch.tensor([0, 0]))  # the 4th step: time limit, never termination
    assert r.truncated.all() and not r.terminated.any()
    r = env.step(torch.tensor([1, 1]))  # next-step autoreset: back to state 0, reward 0
    assert r.obs.argmax(-1).tolist() == [0, 0] and r.reward.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_index_observation_and_uniform_start(backend):
    env = BatchedEnv(_handcrafted(start_state="uniform", obs="index"), 3000, max_steps=1, backend=backend)
    obs = env.observe()
    assert obs.shape == (3000, 1)
    counts = torch.bincount(obs[:, 0].long(), minlength=3)
    assert counts.sum() == 3000 and counts.min() > 850  # uniform over 3 states (1000 expected)


def test_noise_table_and_noisy_rewards():
    table = normal_noise_table()
    assert table.shape == (1 << 16,)
    assert np.all(np.diff(table) > 0)
    assert abs(table.mean()) < 1e-15 and abs(table.var() - 1.0) < 1e-12
    assert np.array_equal(table.astype(np.float32), -table[::-1].astype(np.float32))
    # third and fourth moments close to the normal's 0 and 3
    assert abs((table**3).mean()) < 1e-12 and abs((table**4).mean() - 3.0) < 0.01
    env = BatchedEnv(_handcrafted(reward_std=2.0), 4096, max_steps=100, backend="cpp")
    r = env.step(torch.zeros(4096, dtype=torch.int64)).reward.double()
    noise = r - 0.0  # state 0, action 0: mean 0
    assert abs(noise.mean()) < 0.15 and abs(noise.std() - 2.0) < 0.1
    scaled = (normal_noise_table() * 2.0).astype(np.float32)
    assert np.isin(r.float().numpy(), scaled).all()


def test_inverse_cdf_never_draws_zero_probability_states():
    P = np.zeros((1, 5, 1, 5))
    P[0, :, 0] = [0.0, 0.5, 0.0, 0.5, 0.0]  # zeros at the start, middle and end
    fam = TabularMDPFamily(transitions=P, reward_means=np.zeros((1, 5, 1)), reward_std=0.0)
    cdf = fam.cdf.numpy()
    assert cdf[0, 0, 0].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    env = BatchedEnv(fam, 2048, backend="cpp")
    seen = torch.zeros(5, dtype=torch.int64)
    for _ in range(20):
        seen += torch.bincount(env.step(torch.zeros(2048, dtype=torch.int32)).obs.argmax(-1), minlength=5)
    assert seen[0] == seen[2] == seen[4] == 0
    assert abs(seen[1].item() / seen.sum().item() - 0.5) < 0.02


def test_transition_frequencies_match_effective_probabilities():
    fam = TabularMDPFamily(4, 2, 1, task_seed=3, reward_std=0.0, start_state="uniform")
    env = BatchedEnv(fam, 8192, max_steps=1, backend="cpp")
    counts = torch.zeros(4, 2, 4, dtype=torch.float64)
    for _ in range(10):
        s = env.observe().argmax(-1)
        a = torch.randint(0, 2, (8192,))
        r = env.step(a)
        counts.index_put_((s, a, r.obs.argmax(-1)), torch.ones(8192, dtype=torch.float64), accumulate=True)
        env.step(a)  # the reset step (next-step autoreset)
    n = counts.sum(-1, keepdim=True)
    expected = fam.transitions[0]
    se = (expected * (1 - expected) / n).sqrt()
    assert ((counts / n - expected).abs() <= 5 * se + 1e-9).all()


def test_task_generation_reproducible_and_splits_disjoint():
    P1, R1 = tabular_tasks(6, 5, 3, split="train", task_seed=4)
    P2, R2 = tabular_tasks(6, 5, 3, split="train", task_seed=4)
    assert np.array_equal(P1, P2) and np.array_equal(R1, R2)
    P3, R3 = tabular_tasks(3, 5, 3, split="train", task_seed=4)  # task t does not depend on the pool size
    assert np.array_equal(P1[:3], P3) and np.array_equal(R1[:3], R3)
    Pt, Rt = tabular_tasks(6, 5, 3, split="test", task_seed=4)
    Po, _ = tabular_tasks(6, 5, 3, split="train", task_seed=5)
    for Q in (Pt, Po):
        assert not np.isclose(P1[:, None], Q[None]).all(axis=(2, 3, 4)).any()
    assert not np.isin(R1, Rt).any()
    # distribution: Dirichlet(1) rows, N(1, 1) reward means
    P, R = tabular_tasks(400, 10, 5)
    assert P.shape == (400, 10, 5, 10) and R.shape == (400, 10, 5) and R.dtype == np.float32
    assert np.allclose(P.sum(-1), 1.0) and (P > 0).all()
    assert abs(P.mean() - 0.1) < 1e-12 and abs(P.var() - 9 / (100 * 11)) < 5e-4  # Dirichlet(1) marginals
    assert abs(R.mean() - 1.0) < 0.03 and abs(R.std() - 1.0) < 0.03


def test_cdf_table_properties():
    P, _ = tabular_tasks(50, 7, 4)
    c = transition_cdf(P)
    assert c.dtype == np.float32 and (c[..., -1] == 1.0).all() and (np.diff(c, axis=-1) >= 0).all()
    eff = effective_transitions(c)
    assert np.allclose(eff.sum(-1), 1.0, atol=0) and np.abs(eff - P).max() < 1e-6


def test_env_reproducible_by_seed():
    a = torch.randint(0, 5, (30, 16), generator=torch.Generator().manual_seed(0))
    runs = []
    for seed in (7, 7, 8):
        env = TabularMDP(16, num_tasks=5, seed=seed)
        runs.append(torch.stack([env.step(a[k]).reward for k in range(30)]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def _mc_returns(env, tasks, pi, steps, gamma, time_dependent=False, seed=0):
    """Discounted return of each env following action probabilities pi[task, (t,) s, :]."""
    g = torch.Generator().manual_seed(seed)
    obs = env.set_tasks(tasks)
    ret = torch.zeros(env.num_envs, dtype=torch.float64)
    disc = 1.0
    for t in range(steps):
        s = obs.argmax(-1)
        probs = pi[tasks, t, s] if time_dependent else pi[tasks, s]
        a = torch.multinomial(probs, 1, generator=g)[:, 0]
        r = env.step(a)
        ret += disc * r.reward.double()
        disc *= gamma
        obs = r.obs
    return ret


def _check_mc(ret, tasks, exact, n_tasks):
    for k in range(n_tasks):
        x = ret[tasks == k]
        se = x.std() / len(x) ** 0.5
        assert abs(x.mean() - exact[k]) < 5 * se, (k, x.mean().item(), exact[k].item(), se.item())


def test_finite_horizon_exact_vs_monte_carlo():
    H, n_tasks, per = 10, 4, 3000
    env = TabularMDP(n_tasks * per, num_tasks=n_tasks, task_seed=2, max_steps=H, seed=3)
    fam = env.family
    pi = torch.softmax(torch.randn(n_tasks, 10, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64), -1)
    sol = fam.exact(pi, horizon=H)
    assert sol.V_opt.shape == (n_tasks, H + 1, 10) and sol.policy_opt.shape == (n_tasks, H, 10)
    assert (sol.value_opt >= sol.value_pi - 1e-12).all()
    tasks = torch.arange(n_tasks).repeat_interleave(per)
    _check_mc(_mc_returns(env, tasks, pi, H, 1.0), tasks, sol.value_pi, n_tasks)
    greedy = torch.nn.functional.one_hot(sol.policy_opt, 5).double()  # [N, H, S, A]
    _check_mc(_mc_returns(env, tasks, greedy, H, 1.0, time_dependent=True, seed=1), tasks, sol.value_opt, n_tasks)
    # the optimal values satisfy the Bellman optimality equation
    P, R = fam.transitions, fam.reward_means
    Q = R + torch.einsum("nsaj,nj->nsa", P, sol.V_opt[:, 1])
    assert torch.allclose(Q, sol.Q_opt[:, 0]) and torch.allclose(sol.V_opt[:, 0], Q.max(-1).values)


def test_discounted_exact_vs_monte_carlo_and_oracle():
    gamma, n_tasks, per = 0.8, 3, 3000
    env = TabularMDP(n_tasks * per, num_tasks=n_tasks, start_state="uniform", max_steps=None, seed=9)
    fam = env.family
    pi = torch.softmax(torch.randn(n_tasks, 10, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64), -1)
    sol = fam.exact(pi, gamma=gamma)
    tasks = torch.arange(n_tasks).repeat_interleave(per)
    _check_mc(_mc_returns(env, tasks, pi, 90, gamma), tasks, sol.value_pi, n_tasks)
    # optimality: Bellman equation, and no policy does better
    mdp = fam.mdp(gamma)
    Q = mdp.R + gamma * torch.einsum("nsaj,nj->nsa", mdp.P, sol.V_opt)
    assert torch.allclose(Q.max(-1).values, sol.V_opt, atol=1e-9)
    assert (sol.V_opt >= sol.V_pi - 1e-9).all()
    # long finite horizons converge to the discounted values
    fh = fam.finite_horizon(200, pi, gamma=gamma)
    assert torch.allclose(fh.V_opt[:, 0], sol.V_opt, atol=1e-9)
    assert torch.allclose(fh.V_pi[:, 0], sol.V_pi, atol=1e-9)


def test_bad_actions_raise_and_step_nothing():
    for backend in ("reference", "cpp"):
        env = TabularMDP(8, num_tasks=3, backend=backend)
        env.step(torch.ones(8, dtype=torch.int32))
        state = {k: v.clone() for k, v in {**env.state, **env.bk}.items()}
        for bad in (torch.tensor([0, 1, 2, 3, 4, 5, 0, 0]), torch.full((8,), -1), torch.full((8,), 2**33)):
            with pytest.raises(ValueError, match="action out of range"):
                env.step(bad)
        for k, v in {**env.state, **env.bk}.items():
            assert torch.equal(v, state[k]), k
        with pytest.raises(TypeError):
            env.step(torch.zeros(8))
        with pytest.raises(ValueError):
            env.step(torch.zeros(7, dtype=torch.int32))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        TabularMDP(4, num_states=0)
    with pytest.raises(TypeError):
        TabularMDP(4, num_actions=2.5)
    with pytest.raises(ValueError):
        TabularMDP(4, split="val")
    with pytest.raises(ValueError):
        TabularMDP(4, start_state="random")
    with pytest.raises(ValueError):
        TabularMDP(4, obs="image")
    with pytest.raises(ValueError):
        TabularMDP(4, reward_std=-1.0)
    with pytest.raises(TypeError):
        TabularMDP(4, reward_std="1")
    with pytest.raises(ValueError):
        TabularMDP(4, task_seed=-1)
    with pytest.raises(ValueError):
        TabularMDPFamily(transitions=np.full((1, 2, 2, 2), 0.7), reward_means=np.zeros((1, 2, 2)))
    with pytest.raises(ValueError):
        TabularMDPFamily(transitions=np.full((1, 2, 2, 2), 0.5), reward_means=np.zeros((1, 2, 3)))
    with pytest.raises(ValueError):
        TabularMDPFamily(transitions=np.full((1, 2, 2, 2), 0.5))
    fam = TabularMDPFamily(3, 2, 2)
    with pytest.raises(ValueError):
        fam.exact(torch.ones(2, 3, 2), horizon=5)  # rows do not sum to 1
    with pytest.raises(ValueError):
        fam.exact(gamma=1.0)
    with pytest.raises(ValueError):
        fam.exact(horizon=0)


def test_spaces_and_render():
    env = TabularMDP(2, num_tasks=2)
    space = env.family.single_observation_space()
    assert space.shape == (10,) and space.contains(env.observe()[0].numpy())
    S, bk, P = env._numpy_views()
    img = env.family.render_rgb(S, P, 0, int(bk.task[0]))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


@pytest.mark.cuda
def test_cuda_matches_cpp():
    kw = dict(num_states=8, num_actions=4, num_tasks=13, start_state="uniform", episodes_per_trial=3, seed=4)
    cpu = TabularMDP(4096, backend="cpp", **kw)
    gpu = TabularMDP(4096, device="cuda", backend="cuda", **kw)
    assert torch.equal(cpu.observe(), gpu.observe().cpu())
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        a = torch.randint(0, 4, (4096,), generator=g, dtype=torch.int32)
        ra, rb = cpu.step(a), gpu.step(a.cuda())
        for x, y in zip(tuple(ra)[:4], tuple(rb)[:4], strict=True):
            assert torch.equal(x, y.cpu())
