"""MAML-RL / E-MAML / ProMP (metakern.algos): meta-gradients against plain-autograd references,
the estimator slots, the TRPO Fisher-vector product, run folders, resume and the CLI."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from bench_testing import load_asv_suite
from metakern.algos import emaml, maml, promp, rollout
from metakern.bench import maml as bench_maml
from metakern.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> maml.MAMLConfig:
    base = dict(meta_batch=3, episodes_per_task=3, eval_tasks=2, eval_repeats=1, iterations=3, eval_every=2,
                checkpoint_every=1, krazy_train_tasks=32, policy="linear", inner_lr=1.0, outer_lr=0.05)  # fmt: skip
    base.update(kw)
    return maml.MAMLConfig(**base)


def collected(algo: maml.MAML, it: int = 0):
    """(inner, W_K, chain, post, mdp) of one training sample."""
    tasks = torch.arange(algo.cfg.meta_batch)
    gen = torch.Generator().manual_seed(it)
    envs, episodes = (algo.train_env,) * 2, (algo.cfg.episodes_per_task,) * 2
    inner, chain, post, mdp = algo.sample(envs, tasks, episodes, gen, it, "train")
    return inner, chain[-1], chain, post, mdp


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("env", "atari", "env must be one of"),
        ("inner_estimator", "reinforce", "inner_estimator must be one of"),
        ("outer_estimator", "exact", "needs --env tabular"),
        ("outer", "sgd", "outer must be one of"),
        ("inner_lr", -1.0, "inner_lr must be a number"),
        ("gamma", 1.5, "gamma must be a number"),
        ("meta_batch", 33, "at most the 32 training tasks"),
        ("iterations", 0, "iterations must be a positive int"),
        ("episodes_per_task", 1, "episodes_per_task must be >= 2"),
    ],
)
def test_config_errors(field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny(**{field: value}).validate()


# -- the meta-gradient ------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["krazyworld", "maze"])
def test_vpg_meta_gradient_matches_plain_autograd(env):
    """The fused ops' meta-gradient equals plain torch (log_softmax + gather, Python-loop returns,
    autograd double backward through the inner step) on the same episodes."""
    algo = maml.MAML(tiny(env=env, inner_lr=2.0, meta_batch=8, episodes_per_task=6))
    with torch.no_grad():
        algo.theta.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    inner, W, _, post, _ = collected(algo)
    J = maml.objective("maml", post, maml.Signals(post, algo.cfg.gamma), W, algo.cfg).mean()
    (ours,) = torch.autograd.grad(J, algo.theta)

    theta = algo.theta.detach().clone().requires_grad_(True)
    ep = inner[0][0]
    W0 = theta.expand(algo.cfg.meta_batch, *theta.shape)
    unpack = lambda e: (e.features, e.actions, e.rewards, e.mask)  # noqa: E731
    J_in = bench_maml.reference_objective(*unpack(ep), W0, algo.cfg.gamma)
    (g,) = torch.autograd.grad(J_in.sum(), W0, create_graph=True)
    W1 = W0 + algo.cfg.inner_lr * g
    torch.testing.assert_close(W1.detach(), W.detach(), rtol=1e-5, atol=1e-6)
    (ref,) = torch.autograd.grad(bench_maml.reference_objective(*unpack(post), W1, algo.cfg.gamma).mean(), theta)
    assert ref.abs().max() > 1e-4  # a real signal, not two zeros
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


def test_slots_take_value_from_inner_and_graph_from_hessian():
    cfg = tiny(inner_estimator="maml", hessian_estimator="dice")
    algo = maml.MAML(cfg)
    algo_same = maml.MAML(tiny(inner_estimator="maml"))
    algo_dice = maml.MAML(tiny(inner_estimator="dice"))
    for a in (algo, algo_same, algo_dice):
        with torch.no_grad():
            a.theta.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    _, W, *_ = collected(algo)
    _, W_same, *_ = collected(algo_same)
    torch.testing.assert_close(W.detach(), W_same.detach())  # the inner value: maml's
    u = torch.randn(W.shape, generator=torch.Generator().manual_seed(3))
    (mixed,) = torch.autograd.grad(W, algo.theta, u)
    _, W_dice, *_ = collected(algo_dice)
    (dice_graph,) = torch.autograd.grad(W_dice, algo_dice.theta, u)
    torch.testing.assert_close(mixed, dice_graph, rtol=1e-5, atol=1e-6)  # the graph: dice's


def test_tabular_exact_value_matches_the_env_oracle():
    algo = maml.MAML(tiny(env="tabular", inner_estimator="exact", outer_estimator="exact"))
    tasks = torch.tensor([0, 5, 7])
    W = torch.randn(3, 10, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mdp = algo._mdp(algo.train_env, tasks)
    ours = maml.tabular_exact_value(mdp, W, 10, 0.9)
    ref = algo.train_env.family.finite_horizon(10, torch.softmax(W, -1), gamma=0.9, tasks=tasks).value_pi
    torch.testing.assert_close(ours, ref)


def test_trpo_fisher_vector_product_matches_autograd_hessian_of_the_kl():
    """At theta_old, the Hessian of KL(pi_W'(theta_old) || pi_W'(theta)) w.r.t. theta equals the
    Gauss-Newton product J^T H_KL J that ``_fvp`` computes with per-step VJPs (metakern HVPs)."""
    cfg = tiny(outer="trpo", inner_lr=3.0, cg_damping=0.0)
    algo = maml.MAML(cfg)
    with torch.no_grad():
        algo.theta.normal_(0, 0.3, generator=torch.Generator().manual_seed(4))
    inner, W, chain, post, _ = collected(algo)
    fvp = algo._fvp(chain, W.detach(), post)
    v = torch.randn(algo.theta.shape, generator=torch.Generator().manual_seed(5))
    ours = fvp(v)

    ep = inner[0][0]
    unpack = (ep.features, ep.actions, ep.rewards, ep.mask)

    def kl_of(theta):
        W0 = theta.expand(cfg.meta_batch, *theta.shape)
        (g,) = torch.autograd.grad(bench_maml.reference_objective(*unpack, W0, cfg.gamma).sum(), W0, create_graph=True)
        return algo._kl(W.detach(), W0 + cfg.inner_lr * g, post)

    _, ref = torch.autograd.functional.hvp(kl_of, algo.theta.detach().clone(), v)
    assert ref.abs().max() > 1e-5
    torch.testing.assert_close(ours, ref, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("outer", ["vpg", "ppo", "trpo"])
def test_outer_update_moves_theta(outer):
    algo = maml.MAML(tiny(outer=outer, env="maze"))  # maze rewards are never all zero
    before = algo.theta.detach().clone()
    row = algo.step(0)
    assert math.isfinite(row["post_return"]) and row["env_steps"] > 0
    if outer == "trpo" and row["step_fraction"] == 0:
        pytest.fail("the TRPO line search rejected every step on the first iteration")
    assert not torch.equal(before, algo.theta.detach())


@pytest.mark.parametrize("estimator", [e for e in maml.ESTIMATORS if e != "exact"])
def test_every_estimator_gives_a_finite_meta_gradient(estimator):
    algo = maml.MAML(tiny(inner_estimator=estimator, outer_estimator=estimator))
    _, W, _, post, _ = collected(algo)
    J = maml.objective(estimator, post, maml.Signals(post, algo.cfg.gamma), W, algo.cfg).mean()
    (g,) = torch.autograd.grad(J, algo.theta)
    assert torch.isfinite(g).all()


def test_emaml_term_changes_the_gradient_and_is_zero_without_spread():
    algo = maml.MAML(tiny(exploration_weight=1.0))
    inner, _, _, post, _ = collected(algo)
    term = algo._emaml_term(inner, post, algo.theta)
    (g,) = torch.autograd.grad(term, algo.theta)
    spread = post.episode_return().mean(1)
    assert (g.abs().max() > 0) == bool(spread.max() > spread.min())


# -- runs, checkpoints, resume, CLI -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "env", "extra"),
    [
        (maml, "krazyworld", {}),
        (maml, "maze", {"outer": "trpo"}),
        (maml, "tabular", {"inner_estimator": "exact", "hessian_estimator": "maml", "outer_estimator": "exact"}),
        (emaml, "krazyworld", {}),
        (promp, "maze", {}),
    ],
)
def test_train_smoke_writes_a_run_folder(tmp_path, module, env, extra):
    cfg = module.CONFIG(**{**tiny().__dict__, "env": env, **extra})
    summary = module.train(cfg, tmp_path / "run", progress=False)
    assert summary["iteration"] == cfg.iterations
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").read_text().splitlines()))
    assert [int(r["iteration"]) for r in rows] == list(range(cfg.iterations))
    assert math.isfinite(float(rows[-1]["eval_post_return"]))
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env"] == env


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    cfg = tiny(iterations=4, checkpoint_every=2)
    maml.train(cfg, tmp_path / "a", progress=False)
    step = maml.MAML.step

    def crash_at_3(self, it):
        if it == 3:
            raise KeyboardInterrupt
        return step(self, it)

    monkeypatch.setattr(maml.MAML, "step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        maml.train(cfg, tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["iteration"] == 2
    assert (
        len(list(csv.DictReader((tmp_path / "b" / "metrics.csv").read_text().splitlines()))) == 3
    )  # row 2 is past the checkpoint
    monkeypatch.setattr(maml.MAML, "step", step)
    maml.train(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=False) for d in "ab")
    torch.testing.assert_close(a["theta"], b["theta"], rtol=0, atol=0)
    rows = [list(csv.DictReader((tmp_path / d / "metrics.csv").read_text().splitlines())) for d in "ab"]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(rows[0]) == strip(rows[1])


def test_run_folder_refuses_overwrite_and_mismatched_resume(tmp_path):
    maml.train(tiny(iterations=1), tmp_path / "r", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        maml.train(tiny(iterations=1), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match=r"other settings .*inner_lr"):
        maml.train(tiny(iterations=2, inner_lr=0.5), tmp_path / "r", resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        maml.train(tiny(), tmp_path / "none", resume=True, progress=False)


def test_cli_train_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "maml", "--env", "tabular", "--iterations", "2", "--meta-batch", "2", "--episodes-per-task", "2",
            "--eval-tasks", "2", "--eval-repeats", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iteration"] == 2 and (out / "metrics.csv").exists()
    assert cli_main([*args[:-3], "--out", str(tmp_path / "bad"), "--quiet", "--inner-lr", "-1"]) == 2
    assert "inner_lr must be" in capsys.readouterr().err
    assert cli_main([*args, "--resume", "--inner-lr", "0.25"]) == 2  # other settings than the saved run
    assert "other settings (inner_lr)" in capsys.readouterr().err
    assert cli_main([*args, "--resume", "--iterations", "3"]) == 0  # a larger --iterations extends the run
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iteration"] == 3 and len(list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))) == 3
    assert json.loads((out / "config.json").read_text())["iterations"] == 3
    assert cli_main([*args, "--resume", "--iterations", "1"]) == 2  # fewer than already done


def test_collect_masks_steps_after_the_episode_end():
    spec = rollout.env_spec("krazyworld")
    env = rollout.make_env("krazyworld", "train", 8)
    W = torch.zeros(2, spec.num_features, spec.num_actions)
    ep = rollout.collect(env, spec, W, torch.tensor([0, 1]), 4, torch.Generator().manual_seed(0), 0)
    m = ep.mask
    assert (m[..., 0] == 1).all()
    assert (m[..., 1:] <= m[..., :-1]).all()  # once an episode ends it stays ended
    assert (ep.rewards[m == 0] == 0).all()
    torch.testing.assert_close(ep.logp, torch.full_like(ep.logp, -math.log(4)))  # uniform policy


def test_bench_case_runs_every_implementation():
    case = bench_maml.krazyworld_case(meta_batch=2, episodes_per_task=2)
    assert case.items > 0
    inputs = case.make_inputs()
    for impl in case.impls:
        fn = impl.setup(inputs)
        fn()
        fn()


def test_asv_maml_suite_builds_from_the_case():
    suite = load_asv_suite("maml")
    assert suite.CASE == bench_maml.krazyworld_case().id
    bench = suite.MAMLMetaIteration()
    bench.setup("cpp")
    bench.time_meta_iteration("cpp")
    assert bench.case.items > 0


def test_two_inner_steps_meta_gradient_matches_plain_autograd():
    """K = 2: each inner step on fresh episodes sampled with the current adapted policy; the
    meta-gradient differentiates through both steps (HVP of an HVP chain), as plain autograd does."""
    cfg = tiny(env="maze", inner_steps=2, inner_lr=2.0, meta_batch=4, episodes_per_task=4)
    algo = maml.MAML(cfg)
    with torch.no_grad():
        algo.theta.normal_(0, 0.3, generator=torch.Generator().manual_seed(6))
    inner, W, _, post, _ = collected(algo)
    assert len(inner) == 2
    J = maml.objective("maml", post, maml.Signals(post, cfg.gamma), W, cfg).mean()
    (ours,) = torch.autograd.grad(J, algo.theta)

    theta = algo.theta.detach().clone().requires_grad_(True)
    Wk = theta.expand(cfg.meta_batch, *theta.shape)
    for ep, _ in inner:
        J_in = bench_maml.reference_objective(ep.features, ep.actions, ep.rewards, ep.mask, Wk, cfg.gamma)
        (g,) = torch.autograd.grad(J_in.sum(), Wk, create_graph=True)
        Wk = Wk + cfg.inner_lr * g
    torch.testing.assert_close(Wk.detach(), W.detach(), rtol=1e-5, atol=1e-6)
    J_ref = bench_maml.reference_objective(post.features, post.actions, post.rewards, post.mask, Wk, cfg.gamma)
    (ref,) = torch.autograd.grad(J_ref.mean(), theta)
    assert ref.abs().max() > 1e-4
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    row = maml.MAML(tiny(env="maze", inner_steps=2, outer="trpo")).step(0)
    assert math.isfinite(row["kl"])


# -- the MLP policy ---------------------------------------------------------------------------------


def _mlp_reference_log_prob(policy):
    """log pi through the policy's plain-torch log_softmax + gather (no fused op)."""

    def log_prob(W, features, actions):
        N, E, T, F = features.shape
        lp = policy.log_softmax(W, features.reshape(N, E * T, F)).reshape(N, E, T, -1)
        return lp.gather(-1, actions[..., None])[..., 0]

    return log_prob


def test_mlp_policy_log_prob_gradient_and_hvp_match_plain_autograd():
    spec = rollout.env_spec("maze")
    policy = rollout.make_policy("mlp", spec, hidden_size=7, hidden_layers=2)
    g = torch.Generator().manual_seed(0)
    N, E, T = 3, 2, 5
    W = torch.randn(N, policy.num_params, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(N, E, T, spec.num_features, generator=g, dtype=torch.float64)
    a = torch.randint(0, spec.num_actions, (N, E, T), generator=g)
    c = torch.randn(N, E, T, generator=g, dtype=torch.float64)
    v = torch.randn(W.shape, generator=g, dtype=torch.float64)
    results = []
    for fn in (policy.log_prob, _mlp_reference_log_prob(policy)):
        lp = fn(W, x, a)
        (gw,) = torch.autograd.grad((c * lp).sum(), W, create_graph=True)
        (hv,) = torch.autograd.grad((gw * v).sum(), W)
        results.append((lp.detach(), gw.detach(), hv))
    for ours, ref in zip(*results, strict=True):
        assert ref.abs().max() > 1e-3
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    assert policy.init(torch.Generator().manual_seed(0)).shape == (policy.num_params,)
    with pytest.raises(ValueError, match="hidden_size, hidden_layers >= 1"):
        rollout.make_policy("mlp", spec, hidden_size=0)
    with pytest.raises(ValueError, match="policy must be one of"):
        rollout.make_policy("rnn", spec)


@pytest.mark.parametrize("estimator", ["maml", "dice"])
def test_mlp_meta_gradient_matches_plain_autograd(estimator, monkeypatch):
    """With ``policy="mlp"`` the meta-gradient through the fused read-out op (its double backward
    in both the weights and the hidden features) equals plain autograd through log_softmax."""
    cfg = tiny(env="maze", policy="mlp", hidden_size=8, hidden_layers=2, inner_lr=2.0, meta_batch=4,
               episodes_per_task=4, inner_estimator=estimator, outer_estimator=estimator)  # fmt: skip
    algo = maml.MAML(cfg)
    assert algo.theta.shape == (algo.policy.num_params,)
    inner, W, _, post, _ = collected(algo)
    J = maml.objective(estimator, post, maml.Signals(post, cfg.gamma), W, cfg).mean()
    (ours,) = torch.autograd.grad(J, algo.theta)
    monkeypatch.setattr(algo.policy, "log_prob", _mlp_reference_log_prob(algo.policy))
    W_ref, _ = algo.adapted(algo.theta, inner, None)
    J_ref = maml.objective(estimator, post, maml.Signals(post, cfg.gamma), W_ref, cfg).mean()
    (ref,) = torch.autograd.grad(J_ref, algo.theta)
    assert ref.abs().max() > 1e-4
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("outer", ["vpg", "ppo", "trpo"])
def test_mlp_policy_trains(tmp_path, outer):
    cfg = tiny(env="krazyworld", policy="mlp", hidden_size=8, outer=outer, exploration_weight=0.5)
    summary = maml.train(cfg, tmp_path / "run", progress=False)
    assert summary["iteration"] == cfg.iterations and math.isfinite(summary["eval_post_return"])
    with pytest.raises(ValueError, match="policy must be one of"):
        tiny(policy="cnn").validate()
    with pytest.raises(ValueError, match="needs --policy linear"):
        tiny(env="tabular", policy="mlp", inner_estimator="exact").validate()
    assert maml.MAMLConfig().policy == "mlp"  # the default, with which Krazy World learns


@pytest.mark.parametrize("permute", [False, True])
def test_bench_reference_loop_plays_the_same_tasks(permute):
    """The baseline's gymnasium envs and metakern's batched env show the same first observation of
    the same task, with and without the tile-id permutation."""
    cfg = bench_maml.bench_config(meta_batch=2, episodes_per_task=2)
    cfg.krazy_permute_ids = permute
    ref = bench_maml.ReferenceMAML(cfg)
    ours = maml.MAML(cfg)
    tasks = torch.tensor([3, 17])
    obs = ours.train_env.set_tasks(tasks.repeat_interleave(2))
    for i, env in enumerate(ref.envs.envs):
        first, _ = env.reset(options={"task": int(tasks[i // 2])})
        assert first.tolist() == obs[i].tolist(), i
