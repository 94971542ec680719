"""metakern.analysis: the estimator registry against exact targets, the exact pipeline against the
oracle, the Hessian-bias claims on a small fixed-seed run, the CLI, and input validation."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from metakern import analysis, cli, oracle

GAMMA = 0.8


def _small_problem(T: int = 10, noise: float = 1.0):
    """3 small MDPs (5 states, 3 actions, softer transitions) at a non-uniform theta, a direction v,
    a noisy critic and the exact bootstrapped target."""
    B, S, A = 3, 5, 3
    mdp = oracle.random_mdps(B, S, A, gamma=GAMMA, concentration=0.1, seed=3)
    theta = 0.5 * torch.randn(B, S, A, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = torch.randn(B, S, A, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    critic = analysis.critic_table(mdp, theta, noise, torch.Generator().manual_seed(2))
    return mdp, theta, v, critic


def _z2(estimates: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean squared z-score of the mean estimate: about 1 for an unbiased estimator, >> 1 for a
    biased one (R independent estimates in estimates[R, ...])."""
    R = estimates.shape[0]
    e, t = estimates.reshape(R, -1), truth.reshape(-1)
    return ((e.mean(0) - t) ** 2 / (e.var(0) / R).clamp_min(1e-300)).mean().item()


def _estimates(mdp, theta, v, critic, T, R, N, *, behaviour=None, seed=5, names=None):
    """{name: (grad [R, B, S, A], hvp [R, B, S, A])} for every estimator (of ``names``) that accepts
    the batch."""
    mdp_rep = analysis.repeat_mdp(mdp, R)
    theta_rep = theta.repeat(R, 1, 1)
    sample_theta = theta_rep if behaviour is None else behaviour.repeat(R, 1, 1)
    traj = oracle.sample_trajectories(mdp_rep, sample_theta, N, T + 1, seed=seed)
    samples = analysis.make_samples(traj, critic.repeat(R, 1), GAMMA, T, on_policy=behaviour is None)
    out = {}
    for name, est in analysis.ESTIMATORS.items():
        if (behaviour is not None and not est.off_policy) or (names is not None and name not in names):
            continue
        th = theta_rep.clone().requires_grad_(True)
        g = analysis.estimated_gradient(name, th, samples.batch(th), GAMMA, create_graph=True)
        (hv,) = torch.autograd.grad((g * v.repeat(R, 1, 1)).sum(), th)
        shape = (R, *theta.shape)
        out[name] = (g.detach().reshape(shape), hv.reshape(shape))
    return out


def test_registry_unbiased_where_theory_says_on_policy():
    T = 10
    mdp, theta, v, critic = _small_problem(T)
    grad_F, hvp_F = analysis.bootstrapped_target(mdp, theta, critic, T, v)
    est = _estimates(mdp, theta, v, critic, T, R=100, N=64)
    for name, (g, hv) in est.items():
        assert _z2(g, grad_F) < 3, f"{name}: gradient biased on-policy (z^2 {_z2(g, grad_F):.1f})"
        z2 = _z2(hv, hvp_F)
        if analysis.ESTIMATORS[name].hessian_unbiased:
            assert z2 < 3, f"{name}: Hessian biased on-policy (z^2 {z2:.1f})"
        else:
            assert z2 > 30, f"{name}: Hessian expected biased on-policy (z^2 {z2:.1f})"
    # The same statistic detects a target 25% off: the test can fail.
    assert _z2(est["dr"][0], 1.25 * grad_F) > 5


def test_dice_gradient_close_to_exact_at_large_n():
    T = 10
    mdp, theta, v, critic = _small_problem(T, noise=0.0)
    g, _ = _estimates(mdp, theta, v, critic, T, R=8, N=10000, names=("dice",))["dice"]
    target, _ = analysis.bootstrapped_target(mdp, theta, critic, T, v)
    rel = ((g.mean(0) - target).norm() / target.norm()).item()
    assert rel < 0.08, rel  # 80000 trajectories per task: about 4% expected (DiCE has no baseline)
    assert _z2(g, target) < 3
    # With the exact critic the bootstrapped target is grad J up to O(gamma^T).
    exact = oracle.policy_gradient(mdp, theta)
    assert ((target - exact).norm() / exact.norm()).item() < 3 * GAMMA**T


def test_off_policy_dr_unbiased_taypo1_biased():
    T = 8
    mdp, theta, v, critic = _small_problem(T)
    behaviour = torch.zeros_like(theta)  # uniform mu, theta is not uniform
    grad_F, hvp_F = analysis.bootstrapped_target(mdp, theta, critic, T, v)
    est = _estimates(mdp, theta, v, critic, T, R=100, N=64, behaviour=behaviour)
    assert set(est) == {name for name, e in analysis.ESTIMATORS.items() if e.off_policy}
    for name in ("dr", "dice"):
        assert _z2(est[name][0], grad_F) < 3, name
        assert _z2(est[name][1], hvp_F) < 3, name
    # TayPO-1 (LVC off-policy) is biased off-policy already in its gradient; TayPO-2 less so (its
    # residual is second order in pi - mu: too small to resolve at this sample size).
    assert _z2(est["lvc"][0], grad_F) > 10
    assert _z2(est["taypo2"][0], grad_F) < _z2(est["lvc"][0], grad_F) / 3


def test_on_policy_forms_reject_off_policy_batches():
    T = 5
    mdp, theta, _, critic = _small_problem(T)
    traj = oracle.sample_trajectories(mdp, torch.zeros_like(theta), 4, T + 1, seed=0)
    samples = analysis.make_samples(traj, critic, GAMMA, T, on_policy=False)
    th = theta.clone().requires_grad_(True)
    for name in ("maml", "loaded_dice", "dice_baseline"):
        with pytest.raises(ValueError, match="on-policy"):
            analysis.estimated_gradient(name, th, samples.batch(th), GAMMA, create_graph=False)


def test_bootstrapped_target_and_exact_pipeline_against_oracle():
    mdp, theta, v, _ = _small_problem()
    exact_critic = oracle.evaluate(mdp, theta).V
    # F(theta) = J(theta) in value with the exact critic, at any T ...
    F = analysis.bootstrapped_objective(mdp, theta, exact_critic, 7)
    torch.testing.assert_close(F, oracle.evaluate(mdp, theta).objective, rtol=1e-12, atol=1e-12)
    # ... but not in derivatives (the critic is a constant): the gap is O(gamma^T), gone at T = 200.
    g20, _ = analysis.bootstrapped_target(mdp, theta, exact_critic, 20, v)
    g200, h200 = analysis.bootstrapped_target(mdp, theta, exact_critic, 200, v)
    g, h = oracle.policy_gradient(mdp, theta), oracle.hvp(mdp, theta, v)
    assert ((g20 - g).norm() / g.norm()).item() > 1e-4
    torch.testing.assert_close(g200, g, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(h200, h, rtol=1e-9, atol=1e-12)
    # The exact objective through the K-step unrolled autograd pipeline is the oracle meta-gradient.
    for K in (1, 3):
        want = oracle.maml_meta_gradient(mdp, theta, 5.0, K).meta_gradient
        got = analysis.meta_gradient_estimate("exact", "eee", mdp, theta, 5.0, K, 1, 10)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_meta_gradient_slots_and_sample_cache():
    """Every slot assignment gives a finite estimate different from the exact meta-gradient, seeded
    runs repeat exactly, and the sample cache (shared by runs that reach the same parameters) does
    not change any result."""
    mdp, theta, _, _ = _small_problem()
    exact = oracle.maml_meta_gradient(mdp, theta, 2.0, 2)
    kwargs = {"exact_thetas": exact.thetas, "seed": 1}

    def run(slots, cache=None):
        return analysis.meta_gradient_estimate("dr", slots, mdp, theta, 2.0, 2, 16, 10, cache=cache, **kwargs)

    plain = {slots: run(slots) for slots in ("lll", "ell", "lee", "lle")}
    for est in plain.values():
        assert est.shape == theta.shape and torch.isfinite(est).all()
        assert not torch.allclose(est, exact.meta_gradient)
    torch.testing.assert_close(run("lll"), plain["lll"], rtol=0, atol=0)  # seeded
    cache = analysis.SampleCache()
    for slots, est in plain.items():
        torch.testing.assert_close(run(slots, cache), est, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exact_thetas"):
        analysis.meta_gradient_estimate("dr", "ell", mdp, theta, 2.0, 2, 16, 10)


def test_metrics_known_values():
    truth = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    offset = torch.tensor([0.5, -0.5], dtype=torch.float64)  # per-repeat offsets: mean 0
    est = truth + 0.1 + offset[:, None, None]
    m = analysis.metrics(est, truth)
    assert m["bias"] == pytest.approx(0.01)
    assert m["variance"] == pytest.approx(0.5)  # var of (+0.5, -0.5), unbiased
    assert m["sq_bias"] == pytest.approx(0.01 - 0.5 / 2)
    assert m["corr"] == pytest.approx(1.0)  # a constant shift keeps the correlation
    assert m["rel_bias"] == pytest.approx(0.01 / (truth**2).mean().item())
    flipped = analysis.metrics(-truth.expand(2, -1, -1), truth)
    assert flipped["corr"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="2 repeats"):
        analysis.metrics(truth[None], truth)


def test_hessian_claims_on_small_fixed_seed_run():
    config = analysis.AnalysisConfig(
        num_tasks=3,
        hessian_repeats=8,
        hessian_n=(8, 64, 512),
        epsilons=(0.0,),
        estimators=("maml", "dice", "lvc", "taypo2", "dr", "exact"),
        seed=1,
    )
    result = analysis.run_analysis(config, "hessian")
    claims = {c.key: c for c in result.claims}
    for key in ("P1", "H0", "H1", "H2", "H3"):
        assert claims[key].status == "PASS", f"{key}: {claims[key].evidence}"
    assert claims["H6"].status == "SKIP"  # no off-policy rows in this run
    rows = analysis._select(result.rows, estimator="lvc", quantity="hvp", N=512)
    assert rows[0]["share"] > 0.5
    # The claims are computed, not asserted: declaring LVC's Hessian unbiased makes H2 fail.
    lvc = analysis.ESTIMATORS["lvc"]
    patched = dict(analysis.ESTIMATORS, lvc=dataclasses.replace(lvc, hessian_unbiased=True))
    try:
        analysis.ESTIMATORS.update(patched)
        claims = {c.key: c for c in analysis.evaluate_claims(result.rows, config)}
    finally:
        analysis.ESTIMATORS["lvc"] = lvc
    assert claims["H2"].status == "FAIL"
    assert "[x] lvc" in claims["H2"].evidence


def test_fused_ops_and_reference_objectives_give_the_same_estimates(monkeypatch):
    """The study runs on the fused estimator ops; the reference objectives give the same numbers."""
    from metakern.estimators import reference

    mdp, theta, v, critic = _small_problem(T=8)
    mu = torch.zeros_like(theta)
    for behaviour in (None, mu):
        fused = _estimates(mdp, theta, v, critic, 8, 2, 16, behaviour=behaviour)
        monkeypatch.setattr(analysis, "OBJECTIVES", reference)
        plain = _estimates(mdp, theta, v, critic, 8, 2, 16, behaviour=behaviour)
        monkeypatch.setattr(analysis, "OBJECTIVES", analysis.estimators)
        assert fused.keys() == plain.keys() and len(fused) >= 4
        for name in fused:
            for a, b in zip(fused[name], plain[name], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def test_reproducible_from_seed():
    config = analysis.AnalysisConfig(
        num_tasks=2, hessian_repeats=3, hessian_n=(4,), epsilons=(0.0, 0.5), estimators=("dice", "dr")
    )
    a = analysis.hessian_study(config)
    b = analysis.hessian_study(config)
    c = analysis.hessian_study(dataclasses.replace(config, seed=7))
    key = [(r["bias"], r["variance"]) for r in a]
    assert key == [(r["bias"], r["variance"]) for r in b]
    assert key != [(r["bias"], r["variance"]) for r in c]


def test_cli_writes_tables_and_plots(tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["analysis", "--quick", "--out", str(out), "--seed", "3", "--n", "4,16", "--lrs", "10", "--ks", "1,2"]
    argv += ["--epsilons", "0,0.5", "--tasks", "2", "--repeats", "3", "--estimators", "dice,lvc,exact", "-q"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Claims" in printed and "[P1]" in printed and "PASS" in printed
    for name in ("analysis.md", "analysis.csv", "analysis.json", "hessian_vs_n.png", "hessian_vs_epsilon.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "compositional.png").stat().st_size > 0
    with open(out / "analysis.csv") as f:
        rows = list(csv.DictReader(f))
    studies = {r["study"] for r in rows}
    assert studies == {"hessian", "compositional"}
    assert {r["estimator"] for r in rows} == {"dice", "lvc", "exact"}
    assert {r["N"] for r in rows if r["study"] == "hessian" and r["estimator"] != "exact"} == {"4", "16"}
    data = json.loads((out / "analysis.json").read_text())
    assert data["config"]["seed"] == 3 and data["config"]["comp_ks"] == [1, 2] and data["config"]["comp_lrs"] == [10.0]
    assert len(data["rows"]) == len(rows) and data["claims"]
    md = (out / "analysis.md").read_text()
    assert "## Claims" in md and "| estimator |" in md


def test_cli_study_choice_and_bad_values(tmp_path, capsys):
    out = tmp_path / "h"
    argv = ["analysis", "--study", "hessian", "--out", str(out), "--n", "4", "--epsilons", "0", "--tasks", "1"]
    assert cli.main([*argv, "--repeats", "2", "--estimators", "lvc", "--no-plot", "-q"]) == 0
    assert not (out / "compositional.png").exists() and not (out / "hessian_vs_n.png").exists()
    capsys.readouterr()
    assert cli.main(["analysis", "--n", "-4", "--out", str(out), "-q"]) == 2
    assert "hessian_n (N)[0]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["analysis", "--study", "nope"])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"hessian_n": (16, -4)}, "hessian_n"),
        ({"comp_n": (0,)}, "comp_n"),
        ({"comp_n": ()}, "comp_n"),
        ({"estimators": ("dice", "nope")}, "unknown estimator 'nope'"),
        ({"estimators": ()}, "at least one"),
        ({"estimators": ("dice", "dice")}, "duplicate"),
        ({"epsilons": (0.0, 1.0)}, "epsilons"),
        ({"comp_lrs": (float("nan"),)}, "comp_lrs"),
        ({"comp_ks": (2.5,)}, "comp_ks"),
        ({"hessian_repeats": 1}, "hessian_repeats"),
        ({"gamma": 1.0}, "gamma"),
        ({"slots": ("lxl",)}, "slots"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        analysis.AnalysisConfig(**overrides)


def test_bad_study_and_estimator_names():
    config = analysis.AnalysisConfig(num_tasks=1, hessian_repeats=2, hessian_n=(2,), epsilons=(0.0,))
    with pytest.raises(ValueError, match="unknown study 'nope'"):
        analysis.run_analysis(config, "nope")
    with pytest.raises(ValueError, match="unknown study"):
        analysis.run_analysis(config, ("hessian", "bogus"))
    with pytest.raises(ValueError, match="unknown estimator"):
        analysis.check_estimators(["lvc", "promp"])
    mdp = oracle.random_mdps(1, 3, 2)
    theta = torch.zeros(1, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="slots"):
        analysis.meta_gradient_estimate("dr", "ll", mdp, theta, 1.0, 1, 2, 3)
    with pytest.raises(ValueError, match="unknown estimator"):
        analysis.meta_gradient_estimate("nope", "lll", mdp, theta, 1.0, 1, 2, 3)
    with pytest.raises(ValueError, match="epsilon"):
        analysis.tang_policy(1, 3, 2, 1.5, 0)
