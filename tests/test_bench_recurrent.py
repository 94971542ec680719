"""The recurrent-agent training benchmark (metakern/bench/recurrent.py) and its asv suite: the plain
PyTorch + gymnasium baseline computes what metakern's RecurrentAgent computes (same agent outputs,
GAE, PPO loss and update, same environment inputs), and every implementation runs at tiny sizes.

No timing is asserted."""

from __future__ import annotations

import pytest
import torch
from bench_testing import load_asv_suite
from metakern import envs
from metakern.algos import recurrent
from metakern.bench import harness
from metakern.bench import recurrent as br
from metakern.metods import MetODSPolicy
from metakern.returns import gae

pytestmark = pytest.mark.usefixtures("one_thread")

B, T = 8, 6


def _tiny(kind: str, num_envs: int = B, **kw) -> recurrent.RecurrentConfig:
    if kind == "rl2":
        return br.rl2_config(num_envs, T, hidden=16, **kw)
    return br.metods_config(num_envs, T, hidden=8, **kw)


def _inputs(obs_dim: int, num_actions: int, lead: tuple[int, ...], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, obs_dim, generator=g)
    prev_action = torch.randint(-1, num_actions, lead, generator=g)
    prev_reward = torch.randn(lead, generator=g)
    reset = torch.rand(lead, generator=g) < 0.25
    return x, prev_action, prev_reward, reset


# --------------------------------------------------------------------------------------------------
# Cases


def test_family_registers_the_target_cases():
    assert br.FAMILY in harness.families()
    factory = harness.families()[br.FAMILY]
    cases = {c.name: c for c in factory(torch.device("cpu"), torch.float32)}
    assert set(cases) == {br.RL2_CASE, br.METODS_CASE}
    rl2, metods = cases[br.RL2_CASE], cases[br.METODS_CASE]
    assert rl2.id == "recurrent/rl2-ppo-krazyworld/B=1024,T=50,H=64" and rl2.items == 1024 * 50
    assert metods.id == "recurrent/metods-ppo-maze/B=256,T=100,N=64,S=2" and metods.items == 256 * 100
    for c in cases.values():
        assert [i.name for i in c.impls] == ["cpp", br.BASELINE]
        assert c.baseline == br.BASELINE and c.impl(br.BASELINE).kind == "peer"
    cfg = rl2.make_inputs()["config"]
    assert (cfg.env, cfg.krazy_train_tasks, cfg.hidden, cfg.epochs, cfg.minibatches) == ("krazyworld", 32, 64, 4, 4)
    cfg = metods.make_inputs()["config"]
    assert (cfg.AGENT, cfg.env, cfg.maze_variant, cfg.hidden, cfg.inner_steps) == ("metods", "maze", "metods", 64, 2)
    assert not list(factory(torch.device("cpu"), torch.float64))


def test_both_sides_train_on_emaml_krazy_tasks():
    """krazy_train_tasks=32 is E-MAML's 32 training tasks for the agent and the gym baseline alike."""
    cfg = _tiny("rl2")
    emaml = envs.KrazyWorld(1, obs_view="patch", obs_mode="onehot", split="emaml_train")
    agent = recurrent.RecurrentAgent(cfg)
    for env in (br.train_env(cfg, 4, seed=1), agent.env):
        assert env.family.num_tasks() == 32
        assert torch.equal(env.family.pool()["board"], emaml.family.pool()["board"])
    assert agent.inputs.reset.all() and agent.inputs.x.shape == (B, 91)
    assert br.train_env(_tiny("metods"), 2, seed=0).family.variant == "metods"


@pytest.mark.parametrize("kind", ["rl2", "metods"])
def test_cases_run_every_implementation(kind):
    case = br.rl2_case(B, T) if kind == "rl2" else br.metods_case(B, T, hidden=8)
    assert case.items == B * T
    inputs = case.make_inputs()
    for impl in case.impls:
        fn = harness.bound(impl, inputs)
        fn()
        fn()


def test_reference_loop_counts_env_steps():
    ref = br.ReferenceRecurrentPPO(_tiny("rl2"))
    ref.step()
    ref.step()
    assert ref.env_steps == 2 * B * T
    ref.close()


# --------------------------------------------------------------------------------------------------
# The plain agents compute what metakern's do


def _assert_same_agent(ours, plain, x, pa, pr, reset, state):
    """metakern's agent and the plain one give the same logits, values and state: over a window
    (``forward_sequence`` vs ``plain_sequence``) and for one acting step."""
    with torch.no_grad():
        seq = ours.forward_sequence(x, pa, pr, reset, state)
        logits, values = br.plain_sequence(plain, x, pa, pr, reset, state)
        torch.testing.assert_close(logits, seq.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(values, seq.value, atol=1e-5, rtol=1e-5)
        one = ours(x[:, 0], pa[:, 0], pr[:, 0], state, reset[:, 0])
        lg, v, new_state = plain(x[:, 0], pa[:, 0], pr[:, 0], state, reset[:, 0])
        for a, b in ((lg, one.logits), (v, one.value), (new_state, one.state)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_plain_rl2_equals_gru_policy():
    D, A, H = 11, 4, 16
    torch.manual_seed(0)
    ours = recurrent.GRUPolicy(D, A, H)
    plain = br.PlainRL2(D, A, H)
    plain.load_state_dict(ours.state_dict())
    x, pa, pr, reset = _inputs(D, A, (5, 7))
    _assert_same_agent(ours, plain, x, pa, pr, reset, torch.randn(5, H))


@pytest.mark.parametrize("learn_alpha", [True, False])
def test_plain_metods_equals_metods_policy(learn_alpha):
    D, A, N, S = 11, 4, 8, 2
    torch.manual_seed(1)
    ours = MetODSPolicy(D, A, hidden=N, inner_steps=S, learn_alpha=learn_alpha, validate_args=False)
    plain = br.PlainMetODS(D, A, N, S, learn_alpha=learn_alpha)
    assert sorted(plain.state_dict()) == sorted(ours.state_dict())
    with torch.no_grad():  # move kappa / beta off their init so every coefficient matters
        for p in (ours.kappa, ours.beta):
            p.add_(0.1 * torch.randn_like(p))
    plain.load_state_dict(ours.state_dict())
    x, pa, pr, reset = _inputs(D, A, (5, 7), seed=2)
    _assert_same_agent(ours, plain, x, pa, pr, reset, 0.3 * torch.randn(5, N, N))


@pytest.mark.parametrize("kind", ["rl2", "metods"])
def test_plain_agent_starts_from_metakerns_parameters(kind):
    cfg = _tiny(kind)
    env = br.train_env(cfg, 1, seed=0)
    ours = recurrent.make_policy(cfg, recurrent.input_size(env), env.num_actions).state_dict()
    plain = br.plain_agent(cfg, recurrent.input_size(env), env.num_actions).state_dict()
    assert sorted(ours) == sorted(plain)
    for k in ours:
        assert torch.equal(ours[k], plain[k]), k


@pytest.mark.parametrize("kind", ["rl2", "metods"])
def test_plain_gae_ppo_loss_and_update_equal_metakerns(kind):
    """On one metakern rollout: the Python-loop GAE equals metakern's op, the plain PPO loss equals
    RecurrentAgent.update's (one epoch, one minibatch: the whole window, so the permutation only
    reorders a mean), and one Adam step lands on the same parameters. The policy is perturbed after
    collecting so that the ratios differ from 1 and the clip acts."""
    cfg = _tiny(kind, epochs=1, minibatches=1, clip=0.05)
    agent = recurrent.RecurrentAgent(cfg)
    agent.collect()  # a second window starts mid-trial, from a non-zero memory
    ro = agent.collect()
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        for p in agent.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    ref = br.ReferenceRecurrentPPO(cfg)
    ref.net.load_state_dict(agent.policy.state_dict())
    adv, ret = ref.gae(ro)
    theirs = gae(ro.rewards, ro.values, cfg.gamma, cfg.gae_lambda, dones=ro.trial_done, bootstrap=ro.bootstrap)
    torch.testing.assert_close(adv, theirs.advantages, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, theirs.returns, atol=1e-5, rtol=1e-5)
    loss = ref.loss(ro, adv, ret, torch.arange(B))
    stats = agent.update(ro)
    assert stats["clip_frac"] > 0
    assert loss.item() == pytest.approx(stats["loss"], abs=1e-5, rel=1e-5)
    assert ref.update(ro) == pytest.approx(stats["loss"], abs=1e-5, rel=1e-5)
    ours = agent.policy.state_dict()
    for k, v in ref.net.state_dict().items():
        torch.testing.assert_close(v, ours[k], atol=1e-5, rtol=1e-5)
    ref.close()


# --------------------------------------------------------------------------------------------------
# The gym baseline plays the same environments


@pytest.mark.parametrize("kind", ["rl2", "metods"])
def test_gym_baseline_env_inputs_equal_metakerns(kind):
    """Single env i of the baseline (seed s + i) against metakern's training env of one env with
    the same seed (C++ kernel): the same tasks, and for the same actions the same agent inputs
    (observation, new-episode flag, previous action and reward, trial starts), rewards and trial
    ends, across episode and trial boundaries."""
    n, steps, seed = 3, 260, 11
    cfg = _tiny(kind, num_envs=n, minibatches=1)
    ref = br.ReferenceRecurrentPPO(cfg, seed=seed)
    ours = [br.train_env(cfg, 1, seed=seed + i) for i in range(n)]
    first = torch.ones(1, dtype=torch.bool)
    inp = [recurrent.observe(e, e.observe(), first) for e in ours]

    def check(got, want):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a.to(b.dtype), b, atol=0, rtol=0)

    check(ref.inputs, [torch.cat(v) for v in zip(*inp, strict=True)])
    assert [int(e.env.tasks[0]) for e in ref.envs.envs] == [int(e.tasks[0]) for e in ours]
    g = torch.Generator().manual_seed(0)
    trials = episodes = 0
    for _ in range(steps):
        a = torch.randint(0, ref.num_actions, (n,), generator=g)
        got, reward, _, trial_done = ref.env_step(a)
        outs = [e.step(a[i : i + 1].to(torch.int32)) for i, e in enumerate(ours)]
        want = [recurrent.observe(e, o.obs, o.info["trial_done"].clone()) for e, o in zip(ours, outs, strict=True)]
        check(got, [torch.cat(v) for v in zip(*want, strict=True)])
        check(
            (reward, trial_done), (torch.cat([o.reward for o in outs]), torch.cat([o.info["trial_done"] for o in outs]))
        )
        trials += int(trial_done.sum())
        episodes += int(sum(bool(o.terminated | o.truncated) for o in outs))
    assert trials > 0 and episodes >= trials * cfg.trial_episodes()
    ref.close()


# --------------------------------------------------------------------------------------------------
# asv


def test_asv_suite_builds_from_the_cases(monkeypatch):
    suite = load_asv_suite("recurrent")
    assert suite.CASES == [br.rl2_case().id, br.metods_case().id]
    assert suite.IMPLS == ["cpp", br.BASELINE]
    tiny = [br.rl2_case(B, T), br.metods_case(B, T, hidden=8)]
    harness.families()
    monkeypatch.setitem(harness._FAMILIES, br.FAMILY, lambda device, dtype: iter(tiny))
    for case in tiny:
        for impl in suite.IMPLS:
            bench = suite.RecurrentTraining()
            bench.setup(case.id, impl)
            bench.time_iteration(case.id, impl)
            assert bench.track_env_steps_per_s(case.id, impl) > 0
        speed = suite.RecurrentSpeedup()
        speed.setup(case.id, "cpp")
        assert speed.track_speedup(case.id, "cpp") > 0
    with pytest.raises(NotImplementedError):
        suite.RecurrentTraining().setup(tiny[0].id, "no-such-impl")
