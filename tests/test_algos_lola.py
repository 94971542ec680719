"""LOLA-DiCE (metakern.algos.lola): config checks, smoke runs, exact resume, the exact meta-gradient oracle,
and the sampled meta-gradient against it."""

import csv
import dataclasses
import math

import pytest
import torch
from metakern.algos import lola
from metakern.algos.lola import LolaConfig, exact_lola_gradients
from metakern.envs.ipd import ipd_exact_value

TINY = dict(iterations=3, rollout_length=8, batch_size=4, buffer_size=16, eval_every=1, checkpoint_every=2)


@pytest.mark.parametrize(
    "field, value",
    [
        ("env", "maze"),
        ("lr_in", -0.1),
        ("lr_out", 0.0),
        ("lr_v", -1.0),
        ("lookaheads", -1),
        ("gamma", 1.0),
        ("batch_size", 0),
        ("rollout_length", 0),
        ("iterations", 0),
        ("seed", -1),
        ("buffer_size", 0),
        ("eval_every", -1),
        ("lr_in", float("nan")),
        ("lookaheads", 1.5),
        ("off_policy", 1),
        ("device", "not-a-device"),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        LolaConfig(**{field: value})


def test_config_cross_field_checks():
    with pytest.raises(ValueError, match="off_policy"):
        LolaConfig(off_policy=True, lookaheads=0)
    with pytest.raises(ValueError, match="buffer_size"):
        LolaConfig(off_policy=True, batch_size=128, buffer_size=200)
    cfg = LolaConfig()  # Liu et al.'s IPD settings
    assert (cfg.gamma, cfg.rollout_length, cfg.batch_size, cfg.lr_in, cfg.lr_out, cfg.lr_v) == (
        0.96, 100, 128, 0.3, 0.1, 0.1,
    )  # fmt: skip
    assert (cfg.lookaheads, cfg.iterations, cfg.buffer_size) == (1, 500, 1024)
    assert all(f.type in ("int", "float", "bool", "str") for f in dataclasses.fields(LolaConfig))
    assert lola.CONFIG is LolaConfig and lola.ENVS == ("ipd",)


@pytest.mark.parametrize(
    "variant",
    [dict(lookaheads=0), dict(lookaheads=1), dict(lookaheads=1, off_policy=True)],
    ids=["naive", "lola", "off"],
)
def test_smoke_run_writes_the_run_folder(tmp_path, variant):
    cfg = LolaConfig(**TINY, **variant)
    summary = lola.train(cfg, tmp_path, progress=False)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    for key in ("value1", "value2", "reward1", "reward2", "p_coop1_s0", "p_coop2_s4", "cos1", "cos2"):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    # per-step rewards of the IPD lie in [-3, 0]
    assert all(-3.0 <= float(r["value1"]) <= 0.0 and -3.0 <= float(r["reward2"]) <= 0.0 for r in rows)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == 3 and state["theta"].shape == (2, 5)
    assert (state["buffer"] is not None) == cfg.off_policy
    assert not torch.equal(state["theta"], torch.zeros(2, 5))  # the agents learned something
    assert summary["iterations"] == 3 and isinstance(summary["mutual_cooperation"], bool)
    assert summary["value1"] == pytest.approx(float(rows[-1]["value1"]))
    # a run folder is not silently overwritten
    with pytest.raises(FileExistsError):
        lola.train(cfg, tmp_path, progress=False)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("variant", [dict(lookaheads=1), dict(lookaheads=1, off_policy=True)], ids=["lola", "off"])
def test_resume_after_interruption_is_exact(tmp_path, monkeypatch, variant):
    cfg = LolaConfig(**(TINY | dict(iterations=6, seed=3)), **variant)
    lola.train(cfg, tmp_path / "full", progress=False)
    original = lola._Learner.update

    def crash_at_4(self, iteration, want_exact):
        if iteration == 4:
            raise _Interrupt
        return original(self, iteration, want_exact)

    monkeypatch.setattr(lola._Learner, "update", crash_at_4)
    with pytest.raises(_Interrupt):
        lola.train(cfg, tmp_path / "cut", progress=False)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["iteration"] == 4
    monkeypatch.setattr(lola._Learner, "update", original)
    lola.train(cfg, tmp_path / "cut", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert torch.equal(a["theta"], b["theta"]) and torch.equal(a["values"], b["values"])
    if cfg.off_policy:
        assert all(torch.equal(a["buffer"]["data"][k], b["buffer"]["data"][k]) for k in a["buffer"]["data"])
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()
    # with other settings the resume is refused
    with pytest.raises(ValueError, match="lr_in"):
        lola.train(dataclasses.replace(cfg, lr_in=0.5), tmp_path / "cut", resume=True, progress=False)


def _fd_lola_gradient(theta1, theta2, lr_in, lookaheads, gamma, horizon, agent, eps=1e-5):
    """Central finite differences of J_agent(own, other^(K)(own)), the look-ahead steps taken with plain
    first-order autograd gradients of ipd_exact_value (no graph through them)."""

    def objective(own):
        t1, t2 = (own, theta2) if agent == 0 else (theta1, own)
        other = (t2 if agent == 0 else t1).clone()
        for _ in range(lookaheads):
            o = other.detach().requires_grad_(True)
            j = (
                ipd_exact_value(t1, o, gamma, horizon=horizon)[1]
                if agent == 0
                else ipd_exact_value(o, t2, gamma, horizon=horizon)[0]
            )
            other = other + lr_in * torch.autograd.grad(j, o)[0]
        pair = (t1, other) if agent == 0 else (other, t2)
        return float(ipd_exact_value(*pair, gamma, horizon=horizon)[agent])

    own = (theta1 if agent == 0 else theta2).detach().clone()
    grad = torch.zeros(5, dtype=torch.float64)
    for i in range(5):
        e = torch.zeros(5, dtype=torch.float64)
        e[i] = eps
        grad[i] = (objective(own + e) - objective(own - e)) / (2 * eps)
    return grad


@pytest.mark.parametrize("lookaheads", [0, 1, 2])
@pytest.mark.parametrize("horizon", [None, 10])
def test_exact_meta_gradient_matches_finite_differences(lookaheads, horizon):
    torch.manual_seed(0)
    th = torch.randn(2, 5, dtype=torch.float64)
    g = exact_lola_gradients(th[0], th[1], lr_in=1.0, lookaheads=lookaheads, gamma=0.9, horizon=horizon)
    for agent in (0, 1):
        fd = _fd_lola_gradient(th[0], th[1], 1.0, lookaheads, 0.9, horizon, agent)
        torch.testing.assert_close(g[agent], fd, rtol=1e-6, atol=1e-8)
    if lookaheads:  # the look-ahead changes the gradient (else the check above says nothing about it)
        naive = exact_lola_gradients(th[0], th[1], lr_in=1.0, lookaheads=0, gamma=0.9, horizon=horizon)
        assert (g[0] - naive[0]).norm() > 0.05 * naive[0].norm()


def _estimate(cfg, theta, stale=None):
    learner = lola._Learner(cfg)
    if stale is not None:  # fill the replay buffer from other (older) policies
        with torch.no_grad():
            for t, s in zip(learner.theta, stale, strict=True):
                t.copy_(s)
        learner.fill_buffer(0)
    with torch.no_grad():
        for t, s in zip(learner.theta, theta, strict=True):
            t.copy_(s)
    return learner.meta_gradients(0)[:2]


@pytest.mark.parametrize("off_policy", [False, True], ids=["on", "off"])
def test_sampled_meta_gradient_approaches_the_exact_one(off_policy):
    """With many trajectories the DiCE LOLA meta-gradient (second-order term through the fused op's HVP)
    points along the exact one, and not along the naive gradient (lr_in is large so the two differ)."""
    torch.manual_seed(1)
    th = torch.randn(2, 5, dtype=torch.float64)
    B = 8192
    cfg = LolaConfig(rollout_length=10, gamma=0.9, lr_in=3.0, batch_size=B, off_policy=off_policy, buffer_size=4 * B)
    # off-policy: half the buffer comes from older policies, so the importance weights are not all 1
    stale = th + 0.2 * torch.randn(2, 5, dtype=torch.float64) if off_policy else None
    est = _estimate(cfg, th, stale)
    exact = exact_lola_gradients(th[0], th[1], lr_in=3.0, lookaheads=1, gamma=0.9, horizon=10)
    naive = exact_lola_gradients(th[0], th[1], lr_in=3.0, lookaheads=0, gamma=0.9, horizon=10)
    for i in (0, 1):
        assert lola.cosine(est[i], exact[i]) > 0.98
        assert lola.cosine(est[i], naive[i]) < 0.7
        assert (est[i] - exact[i]).norm() < 0.25 * exact[i].norm()  # consistent: the error shrinks with B


def test_evaluate_mutual_cooperation():
    cfg = LolaConfig()
    coop = lola.evaluate(cfg, {"theta": torch.full((2, 5), -6.0, dtype=torch.float64)})
    assert coop["mutual_cooperation"] and coop["value1"] == pytest.approx(-1.0, abs=0.02)
    defect = lola.evaluate(cfg, {"theta": torch.full((2, 5), 6.0, dtype=torch.float64)})
    assert not defect["mutual_cooperation"] and defect["value2"] == pytest.approx(-2.0, abs=0.02)
    # tit-for-tat-like for agent 1 only: agent 2 defects at the start
    tft = torch.tensor([[-6.0, 6.0, 6.0, -6.0, -6.0], [6.0, 6.0, 6.0, -6.0, -6.0]], dtype=torch.float64)
    assert not lola.evaluate(cfg, {"theta": tft})["mutual_cooperation"]
