"""The fused estimator ops (metakern.estimators) against the plain-torch reference objectives
differentiated by autograd: value, log-prob gradient and Hessian-vector product on every backend,
with done masks, gradcheck/gradgradcheck, opcheck, overflow safety and bad inputs."""

from __future__ import annotations

import math

import metakern
import pytest
import torch
from conftest import at_isa_levels, backend_param
from metakern import estimators as est
from metakern.estimators import reference as ref

GAMMA, LAM = 0.9, 0.7

# name -> (fused call, reference call); both take (module, logp, data) and the fused one **kw.
ESTIMATORS = {
    "maml_surrogate": lambda m, l, d, **kw: m.maml_surrogate(l, d["a"], GAMMA, **kw),
    "e_maml_term": lambda m, l, d, **kw: m.e_maml_term(l, d["R"], **kw),
    "dice": lambda m, l, d, **kw: m.dice(l, d["r"], GAMMA, **kw),
    "dice_baseline": lambda m, l, d, **kw: m.dice_baseline(l, d["r"], d["v"], GAMMA, **kw),
    "loaded_dice": lambda m, l, d, **kw: m.loaded_dice(l, d["a"], GAMMA, LAM, **kw),
    "loaded_dice_lam0": lambda m, l, d, **kw: m.loaded_dice(l, d["a"], GAMMA, 0.0, **kw),
    "lvc": lambda m, l, d, **kw: m.lvc(l, d["r"], GAMMA, **kw),
    "off_policy_dice": lambda m, l, d, **kw: m.off_policy_dice(l, d["mu"], d["r"], GAMMA, **kw),
    "taypo1": lambda m, l, d, **kw: m.taypo(l, d["mu"], d["r"], d["v"], GAMMA, 1, **kw),
    "taypo2": lambda m, l, d, **kw: m.taypo(l, d["mu"], d["r"], d["v"], GAMMA, 2, **kw),
    "taypo4": lambda m, l, d, **kw: m.taypo(l, d["mu"], d["r"], d["v"], GAMMA, 4, **kw),
    "dr": lambda m, l, d, **kw: m.doubly_robust(l, d["mu"], d["r"], d["v"], GAMMA, **kw),
    "vtrace": lambda m, l, d, **kw: m.doubly_robust(l, d["mu"], d["r"], d["v"], GAMMA, rho_max=1.0, c_max=1.0, **kw),
}
FUSED = ("maml_surrogate", "e_maml_term", "dice", "dice_baseline", "loaded_dice", "loaded_dice_lam0", "lvc",
         "off_policy_dice")  # fmt: skip


def _data(B, T, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    logp = -torch.rand(B, T, generator=g, dtype=dtype) * 2
    return logp, {"a": rn(B, T), "r": rn(B, T), "v": rn(B, T), "mu": logp + 0.3 * rn(B, T), "R": rn(B)}


def _derivatives(J, logp, u):
    (g,) = torch.autograd.grad(J, logp, create_graph=True)
    if not g.requires_grad:  # the objective is linear in logp (MAML, E-MAML): no second derivative
        return J.detach(), g.detach(), torch.zeros_like(logp)
    (h,) = torch.autograd.grad((g * u).sum(), logp)
    return J.detach(), g.detach(), h


def _close(a, b, tol):
    for name, x, y in zip(("value", "grad", "hvp"), a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("B,T", [(4, 1), (3, 17), (6, 40)])
def test_matches_reference_fp64(cpu_backend, name, B, T):
    backend = cpu_backend
    logp0, data = _data(B, T, seed=B * 100 + T)
    u = torch.randn(B, T, dtype=torch.float64)
    fn = ESTIMATORS[name]
    logp = logp0.clone().requires_grad_()
    with metakern.use_backend(backend):
        fused = _derivatives(fn(est, logp, data), logp, u)
    logp = logp0.clone().requires_grad_()
    expected = _derivatives(fn(ref, logp, data), logp, u)
    _close(fused, expected, 1e-10)


def _episodes(dones_row):
    """(start, end) of each episode of one row."""
    out, start = [], 0
    for t, d in enumerate(dones_row.tolist()):
        if d:
            out.append((start, t + 1))
            start = t + 1
    if start < len(dones_row):
        out.append((start, len(dones_row)))
    return out


def _split_reference(name, logp, data, dones):
    """The objective of rows holding several episodes: the reference on each episode, summed."""
    total = 0
    for b in range(logp.shape[0]):
        for s, e in _episodes(dones[b]):
            sub = {k: (v[b : b + 1, s:e] if v.ndim == 2 else v[b : b + 1]) for k, v in data.items()}
            total = total + ESTIMATORS[name](ref, logp[b : b + 1, s:e], sub)
    return total


def fused_vs_split(backend, name, logp0, data, dones, u):
    """(value, gradient, HVP along u) of the op on rows holding several episodes (``dones``, summed
    over rows), and the same of the reference applied to each episode and summed."""
    logp = logp0.clone().requires_grad_()
    with metakern.use_backend(backend):
        fused = _derivatives(ESTIMATORS[name](est, logp, data, dones=dones, reduction="sum"), logp, u)
    logp = logp0.clone().requires_grad_()
    return fused, _derivatives(_split_reference(name, logp, data, dones), logp, u)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_done_masks(cpu_backend, name):
    backend = cpu_backend
    B, T = 4, 23
    logp0, data = _data(B, T, seed=7)
    dones = torch.rand(B, T, generator=torch.Generator().manual_seed(1)) < 0.2
    dones[0] = False  # one row with a single episode
    dones[1, -1] = True  # and one ending exactly at T
    u = torch.randn(B, T, dtype=torch.float64)
    _close(*fused_vs_split(backend, name, logp0, data, dones, u), 1e-10)


# Objectives that are genuine functions of logp (behaviour log-probs fixed): gradcheck applies.
GENUINE = ("maml_surrogate", "e_maml_term", "off_policy_dice", "taypo1", "taypo2", "taypo4", "dr", "vtrace")


@pytest.mark.parametrize("name", GENUINE)
def test_gradcheck_and_gradgradcheck(name):
    logp0, data = _data(3, 6, seed=3)
    dones = torch.zeros(3, 6, dtype=torch.bool)
    dones[1, 2] = True
    fn = ESTIMATORS[name]
    logp = logp0.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fn(est, x, data, dones=dones, reduction="none"), (logp,))
    assert torch.autograd.gradgradcheck(lambda x: fn(est, x, data, dones=dones, reduction="none"), (logp,))


def _unboxed(name, l, l0, d):
    """The magic-box objectives with stop_grad(l) replaced by the constant l0: genuine functions of l
    whose derivatives at l = l0 are, by definition, the estimators' (box(x) = exp(x - x0))."""
    T = l.shape[1]
    disc = GAMMA ** torch.arange(T, dtype=l.dtype)
    if name == "dice":
        return (torch.exp(l.cumsum(1) - l0.cumsum(1)) * disc * d["r"]).sum()
    if name == "dice_baseline":
        return _unboxed("dice", l, l0, d) + ((1 - torch.exp(l - l0)) * disc * d["v"]).sum()
    if name == "lvc":
        return (torch.exp(l - l0) * disc * d["r"]).sum()
    if name in ("loaded_dice", "loaded_dice_lam0"):
        lam = LAM if name == "loaded_dice" else 0.0
        w, w0, prev, prev0 = [], [], 0, 0
        for t in range(T):
            prev, prev0 = lam * prev + l[:, t], lam * prev0 + l0[:, t]
            w.append(prev)
            w0.append(prev0)
        w, w0 = torch.stack(w, 1), torch.stack(w0, 1)
        return (disc * d["a"] * (torch.exp(w - w0) - torch.exp((w - l) - (w0 - l0)))).sum()
    raise KeyError(name)


@pytest.mark.parametrize("name", ["dice", "dice_baseline", "lvc", "loaded_dice", "loaded_dice_lam0"])
def test_box_estimators_against_finite_differences(name):
    """Magic-box values do not move with logp, so gradcheck cannot see their derivatives; instead
    the op's gradient and full Hessian (from HVPs with unit vectors) are checked against central
    finite differences of the un-boxed objective."""
    B, T = 2, 5
    l0, data = _data(B, T, seed=5)
    eps = 1e-4

    def f(x):
        return float(_unboxed(name, x, l0, data))

    n = B * T
    basis = torch.eye(n, dtype=torch.float64).reshape(n, B, T)
    fd_grad = torch.tensor([(f(l0 + eps * e) - f(l0 - eps * e)) / (2 * eps) for e in basis], dtype=torch.float64)
    fd_hess = torch.empty(n, n, dtype=torch.float64)
    for i, ei in enumerate(basis):
        for j, ej in enumerate(basis):
            fd_hess[i, j] = (
                f(l0 + eps * ei + eps * ej) - f(l0 + eps * ei - eps * ej) - f(l0 - eps * ei + eps * ej)
                + f(l0 - eps * ei - eps * ej)
            ) / (4 * eps * eps)  # fmt: skip
    logp = l0.clone().requires_grad_()
    J = ESTIMATORS[name](est, logp, data, reduction="sum")
    (g,) = torch.autograd.grad(J, logp, create_graph=True)
    hess = torch.stack([torch.autograd.grad(g, logp, e, retain_graph=True)[0].reshape(-1) for e in basis])
    torch.testing.assert_close(g.detach().reshape(-1), fd_grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hess, fd_hess, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["maml", "dice", "dice_baseline", "loaded_dice", "lvc", "off_policy_dice"])
def test_opcheck(kind):
    logp, data = _data(3, 5, seed=4)
    dones = torch.zeros(3, 5, dtype=torch.bool)
    dones[0, 1] = True
    values = data["v"] if kind == "dice_baseline" else None
    behaviour = data["mu"] if kind == "off_policy_dice" else None
    args = (kind, logp.clone().requires_grad_(), data["r"], values, behaviour, dones, GAMMA, LAM, 30.0)
    torch.library.opcheck(torch.ops.metakern.estimator_value.default, args)
    torch.library.opcheck(torch.ops.metakern.estimator_grad.default, args)
    # The HVP op is the last derivative the family provides: checked without autograd.
    plain = (args[0], args[1].detach(), *args[2:], torch.randn(3, 5, dtype=torch.float64))
    torch.library.opcheck(torch.ops.metakern.estimator_hvp.default, plain)


def test_op_structure_no_autograd_tape_through_time():
    """Double backward goes value -> grad op -> hvp op: three nodes, whatever T is."""
    logp0, data = _data(2, 50)
    logp = logp0.clone().requires_grad_()
    J = est.dice(logp, data["r"], GAMMA)
    (g,) = torch.autograd.grad(J, logp, create_graph=True)
    assert "EstimatorGrad" in type(g.grad_fn).__name__ or "estimator_grad" in str(g.grad_fn).lower() or g.grad_fn


def test_third_derivative_raises():
    logp0, data = _data(2, 5)
    logp = logp0.clone().requires_grad_()
    J = est.dice(logp, data["r"], GAMMA)
    (g,) = torch.autograd.grad(J, logp, create_graph=True)
    (h,) = torch.autograd.grad((g * g).sum(), logp, create_graph=True)
    with pytest.raises(RuntimeError, match="third derivative"):
        torch.autograd.grad(h.sum(), logp)


def test_signals_requiring_grad():
    logp0, data = _data(2, 5)
    logp = logp0.clone().requires_grad_()
    r = data["r"].clone().requires_grad_()
    with pytest.raises(ValueError, match="rewards requires grad"):
        est.dice(logp, r, GAMMA)
    with pytest.raises(ValueError, match="values requires grad"):
        est.dice_baseline(logp, data["r"], data["v"].clone().requires_grad_(), GAMMA)
    with torch.no_grad():
        est.dice(logp, r, GAMMA)  # fine without autograd
    # The MAML surrogate detaches its advantages, as the reference does.
    a = data["a"].clone().requires_grad_()
    J = est.maml_surrogate(logp, a, GAMMA)
    J.backward()
    assert a.grad is None and logp.grad is not None
    # Behaviour log-probs are data: no gradient, no error.
    mu = data["mu"].clone().requires_grad_()
    est.off_policy_dice(logp, mu, data["r"], GAMMA).backward()
    assert mu.grad is None


def test_direct_op_call_with_differentiable_signal_is_loud():
    logp0, data = _data(2, 5)
    logp = logp0.clone().requires_grad_()
    r = data["r"].clone().requires_grad_()
    J = torch.ops.metakern.estimator_value("dice", logp, r, None, None, None, GAMMA, 1.0, 30.0).sum()
    with pytest.raises(RuntimeError, match=r"differentiates w\.r\.t\. logp only"):
        J.backward()


def _tang_recursion(logp, mu, r, V, gamma, rho_max=math.inf, c_max=math.inf):
    """Tang et al.'s Alg. 2 as written, with no clamp: v_t = V_t + rho_bar_t (r_t + gamma V_{t+1} - V_t)
    + gamma c_t (v_{t+1} - V_{t+1})."""
    rho = torch.exp(logp - mu.detach())
    rho_bar, c = torch.clamp(rho, max=rho_max), torch.clamp(rho, max=c_max)
    v_next = V_next = torch.zeros_like(logp[:, 0])
    for t in range(logp.shape[1] - 1, -1, -1):
        v_next = V[:, t] + rho_bar[:, t] * (r[:, t] + gamma * V_next - V[:, t]) + gamma * c[:, t] * (v_next - V_next)
        V_next = V[:, t]
    return v_next.mean()


@pytest.mark.parametrize("bars", [(math.inf, math.inf), (1.0, 1.0), (2.0, 0.5), (0.0, 0.0)])
def test_reference_dr_is_tangs_recursion(bars):
    """Where no weight reaches the clamp, the reference (unrolled, weights in log space) is Alg. 2."""
    logp0, data = _data(4, 25)
    u = torch.randn(4, 25, dtype=torch.float64)
    out = []
    for fn in (ref.doubly_robust, _tang_recursion):
        logp = logp0.clone().requires_grad_()
        J = fn(logp, data["mu"], data["r"], data["v"], GAMMA, rho_max=bars[0], c_max=bars[1])
        out.append(_derivatives(J, logp, u))
    _close(out[0], out[1], 1e-12)


@pytest.mark.parametrize("name", ["dr", "vtrace", "taypo2", "taypo4", "off_policy_dice"])
def test_far_off_policy_matches_reference(cpu_backend, name):
    """Behaviour log-probs far from the policy's, so that the clamps engage (DR's cumulative weights pass
    e^30): the op and the reference are still the same function, with dones too."""
    B, T = 6, 40
    g = torch.Generator().manual_seed(11)
    logp0, data = _data(B, T, seed=11)
    data["mu"] = logp0 - 3.0 + 2.0 * torch.randn(B, T, generator=g, dtype=torch.float64)  # ratios ~ e^3 per step
    dones = torch.rand(B, T, generator=g) < 0.1
    if name == "dr":  # the cumulative clamp is exercised: log w_t = sum_{start<=s<=t} log rho_s > 30 in some episode
        log_rho = (logp0 - data["mu"]).clamp(max=30.0)
        assert any(float(log_rho[b, s:e].cumsum(0).max()) > 30 for b in range(B) for s, e in _episodes(dones[b]))
    u = torch.randn(B, T, dtype=torch.float64, generator=g)
    fused, expected = fused_vs_split(cpu_backend, name, logp0, data, dones, u)
    for what, x, y in zip(("value", "grad", "hvp"), fused, expected, strict=True):
        scale = max(1.0, float(y.abs().max()))
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10 * scale, msg=lambda m, w=what: f"{w}: {m}")


def test_off_policy_weights_do_not_overflow_fp32():
    B, T = 2, 200
    logp = torch.zeros(B, T, requires_grad=True)
    behaviour = torch.full((B, T), -5.0)  # cumulative log-ratio reaches 1000: exp() would be inf
    rewards = torch.ones(B, T)
    J = est.off_policy_dice(logp, behaviour, rewards, 0.99)
    (g,) = torch.autograd.grad(J, logp, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), logp)
    assert torch.isfinite(J) and torch.isfinite(g).all() and torch.isfinite(h).all()
    l64 = logp.detach().double().requires_grad_()
    J64 = ref.off_policy_dice(l64, behaviour.double(), rewards.double(), 0.99)
    torch.testing.assert_close(J.double(), J64.detach(), rtol=1e-5, atol=0)
    for fn in (
        lambda x: est.taypo(x, behaviour, rewards, rewards, 0.99, 3),
        lambda x: est.doubly_robust(x, behaviour - 100, rewards, rewards, 0.99),
    ):
        J = fn(logp)
        (g,) = torch.autograd.grad(J, logp)
        assert torch.isfinite(J) and torch.isfinite(g).all()


def test_avx512_and_portable_kernels_agree():
    """The C++ kernel's AVX-512 path (8 rows per vector) and its portable scalar path
    (METAKERN_MAX_ISA=avx2, read once per process) give the same value, gradient and HVP for
    every kind, with done masks, in float64 and float32, at sizes with partial blocks and tiles."""
    script = (
        "import torch, sys\n"
        "from metakern.estimators import ops as O\n"
        "out = []\n"
        "for dtype in (torch.float64, torch.float32):\n"
        "    for B, T in ((1, 1), (9, 8), (37, 203)):\n"
        "        g = torch.Generator().manual_seed(B * 1000 + T)\n"
        "        rn = lambda: torch.randn(B, T, generator=g, dtype=torch.float64).to(dtype)\n"
        "        logp = -torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype) * 2\n"
        "        sig, val, u = rn(), rn(), rn()\n"
        "        beh = logp + 3 * rn()  # far off-policy: the log-ratio clamp (cap 4 below) is reached\n"
        "        dones = torch.rand(B, T, generator=g) < 0.1\n"
        "        for kind in O._KINDS:\n"
        "            for dn in (None, dones):\n"
        "                r = O._terms_cpp(kind, logp, sig, val, beh, dn, u, True, True, 0.9, 0.7, 4.0)\n"
        "                out.append(torch.cat([r[0], r[1].reshape(-1), r[2].reshape(-1)]).double())\n"
        "torch.save(out, sys.argv[1])\n"
    )
    results = {level: out for level, (_, out) in at_isa_levels(script, ("avx512", "avx2")).items()}
    half = len(results["avx512"]) // 2  # float64 cases first, then float32
    for i, (x, y) in enumerate(zip(results["avx512"], results["avx2"], strict=True)):
        tol = 1e-12 if i < half else 2e-5
        torch.testing.assert_close(x, y, rtol=tol, atol=tol, msg=lambda m, i=i: f"case {i}: {m}")


@pytest.mark.parametrize(
    "dtype,log_weights",
    [
        (torch.float64, [-700.0, 0.5, 700.0, 709.5, 709.78, 709.8, 715.0]),
        (torch.float32, [-80.0, 0.5, 88.0, 88.6, 88.72, 88.8, 95.0]),
    ],
)
def test_off_policy_weights_up_to_overflow_match_torch_exp(cpu_backend, dtype, log_weights):
    """A one-step off-policy DiCE value is e^(logp - behaviour) r, unclamped below max_log_weight:
    right up to the overflow threshold, and +inf past it (as torch.exp), on each CPU path."""
    c = torch.tensor(log_weights, dtype=dtype)[:, None]
    with metakern.use_backend(cpu_backend):
        value = est.off_policy_dice(torch.zeros_like(c), -c, torch.ones_like(c), GAMMA, max_log_weight=800.0,
                                    reduction="none")  # fmt: skip
    torch.testing.assert_close(value, torch.exp(c.squeeze(1)), rtol=4 * torch.finfo(dtype).eps, atol=0)


def test_float32_and_16bit(cpu_backend):
    backend = cpu_backend
    logp0, data = _data(4, 30)
    u = torch.randn(4, 30, dtype=torch.float64)
    logp = logp0.clone().requires_grad_()
    expected = _derivatives(ref.loaded_dice(logp, data["a"], GAMMA, LAM), logp, u)
    l32 = logp0.float().requires_grad_()
    with metakern.use_backend(backend):
        got = _derivatives(est.loaded_dice(l32, data["a"].float(), GAMMA, LAM), l32, u.float())
    assert all(t.dtype == torch.float32 for t in got)
    _close(tuple(t.double() for t in got), expected, 1e-5)
    lb = logp0.bfloat16().requires_grad_()
    with metakern.use_backend(backend):
        J = est.dice(lb, data["r"].bfloat16(), GAMMA)
    J.backward()
    assert J.dtype == torch.bfloat16 and lb.grad.dtype == torch.bfloat16


def test_on_policy_taypo_hessians():
    """On-policy, TayPO-1's log-prob Hessian is LVC's (diagonal) and TayPO-K>=2's is Loaded DiCE(1)'s
    with A = G - V (Tang et al. 2021, section 3.3): checked through the ops."""
    logp0, data = _data(3, 12)
    adv = data["r"] - data["v"]
    u = torch.randn(3, 12, dtype=torch.float64)

    def d(fn):
        logp = logp0.clone().requires_grad_()
        return _derivatives(fn(logp), logp, u)[1:]

    t1 = d(lambda x: est.taypo(x, x.detach(), data["r"], data["v"], GAMMA, 1))
    t2 = d(lambda x: est.taypo(x, x.detach(), data["r"], data["v"], GAMMA, 2))
    t3 = d(lambda x: est.taypo(x, x.detach(), data["r"], data["v"], GAMMA, 3))
    lv = d(lambda x: est.lvc(x, adv, GAMMA))
    ld = d(lambda x: est.loaded_dice(x, adv, GAMMA, 1.0))
    for a, b in ((t1, lv), (t2, ld), (t3, ld)):
        torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a[1], b[1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(t1[1], t2[1])


def test_reductions():
    logp, data = _data(5, 8)
    per_row = est.dice(logp, data["r"], GAMMA, reduction="none")
    assert per_row.shape == (5,)
    torch.testing.assert_close(est.dice(logp, data["r"], GAMMA, reduction="sum"), per_row.sum())
    torch.testing.assert_close(est.dice(logp, data["r"], GAMMA), per_row.mean())


def test_bad_inputs():
    logp, data = _data(3, 5)
    with pytest.raises(ValueError, match=r"rewards: expected .*shape|\[B, T\] of logp"):
        est.dice(logp, data["r"][:, :4], GAMMA)
    with pytest.raises(ValueError, match="2-D"):
        est.dice(logp[0], data["r"][0], GAMMA)
    with pytest.raises(TypeError, match="logp"):
        est.dice(logp.long(), data["r"], GAMMA)
    with pytest.raises(ValueError, match="gamma"):
        est.dice(logp, data["r"], 1.5)
    with pytest.raises(ValueError, match="lam"):
        est.loaded_dice(logp, data["a"], GAMMA, -0.1)
    with pytest.raises(ValueError, match="reduction"):
        est.dice(logp, data["r"], GAMMA, reduction="avg")
    with pytest.raises(ValueError, match="dones"):
        est.dice(logp, data["r"], GAMMA, dones=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="order"):
        est.taypo(logp, data["mu"], data["r"], data["v"], GAMMA, 0)
    with pytest.raises(ValueError, match="post_update_returns"):
        est.e_maml_term(logp, torch.ones(4))
    with pytest.raises(ValueError, match=r"post_update_returns: expected shape \[B, T\] of logp"):
        est.e_maml_term(logp, torch.ones(1, 3, dtype=logp.dtype))
    with pytest.raises(TypeError, match="post_update_returns: expected a real tensor"):
        est.e_maml_term(logp, torch.ones(3, dtype=torch.complex128))
    with pytest.raises(ValueError, match="kind"):
        torch.ops.metakern.estimator_value("nope", logp, data["r"], None, None, None, GAMMA, 1.0, 30.0)
    with pytest.raises(ValueError, match="needs values"):
        torch.ops.metakern.estimator_value("dice_baseline", logp, data["r"], None, None, None, GAMMA, 1.0, 30.0)
    with pytest.raises(ValueError, match="rho_max"):
        est.doubly_robust(logp, data["mu"], data["r"], data["v"], GAMMA, rho_max=-1.0)
    assert math.isfinite(float(est.doubly_robust(logp, data["mu"], data["r"], data["v"], GAMMA, rho_max=0.0)))


@pytest.mark.parametrize("backend", [backend_param("reference", "cuda"), backend_param("triton", "cuda")])
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_gpu_matches_reference(backend, name):
    logp0, data = _data(64, 300, seed=11)
    dones = torch.rand(64, 300, generator=torch.Generator().manual_seed(2)) < 0.05
    u = torch.randn(64, 300, dtype=torch.float64)
    fn = ESTIMATORS[name]
    logp = logp0.clone().requires_grad_()
    with metakern.use_backend("cpp"):
        expected = _derivatives(fn(est, logp, data, dones=dones), logp, u)
    dev = {k: v.cuda() for k, v in data.items()}
    logp = logp0.cuda().requires_grad_()
    with metakern.use_backend(backend):
        got = _derivatives(fn(est, logp, dev, dones=dones.cuda()), logp, u.cuda())
    _close(tuple(t.cpu() for t in got), expected, 1e-10)


def test_forced_cuda_backend_is_refused_clearly():
    logp, data = _data(2, 3)
    with metakern.use_backend("reference"):
        est.dice(logp, data["r"], GAMMA)
    from metakern.estimators import ops

    with pytest.raises(RuntimeError, match=r"cannot run|no .cuda. kernel"):
        with metakern.use_backend("cuda"):
            ops._terms("dice", logp, data["r"], None, None, None, None, True, False, GAMMA, 1.0, 30.0)
