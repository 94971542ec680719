"""Returns and advantages against per-step Python loops written from the conventions in
metakern/returns.py (dones: terminated after step t; truncations: cut after step t, bootstrapping
final_values[:, t] if given; bootstrap: value after the last step), plus identities between them."""

import math

import metakern
import pytest
import torch
from conftest import CPU_BACKENDS, backend_param, rel_rms_err

GAMMA, LAM = 0.9, 0.8

# --------------------------------------------------------------------------------------------
# Loop references: one sequence at a time, one step at a time, on Python floats.
# --------------------------------------------------------------------------------------------


def _rows(t):
    return None if t is None else t.detach().double().tolist()


def _flag(m, b, t) -> bool:
    return m is not None and bool(m[b][t])


def _after(b, t, T, nxt, dones, truncs, final_values, bootstrap):
    """(value of the state after step t, whether the recursion continues into t + 1).

    ``nxt(b, t + 1)`` gives the in-sequence quantity at t + 1 (a value, or a recursive target)."""
    if _flag(dones, b, t):
        return 0.0, False
    if _flag(truncs, b, t):
        return (final_values[b][t] if final_values is not None else 0.0), False
    if t == T - 1:
        return (bootstrap[b] if bootstrap is not None else 0.0), True
    return nxt(b, t + 1), True


def loop_discounted_returns(rewards, gamma, dones=None, truncations=None, bootstrap=None, final_values=None):
    r, d, tr, bs, fv = map(_rows, (rewards, dones, truncations, bootstrap, final_values))
    B, T = rewards.shape
    G = [[0.0] * T for _ in range(B)]
    for b in range(B):
        for t in reversed(range(T)):
            after, _ = _after(b, t, T, lambda b_, t_: G[b_][t_], d, tr, fv, bs)
            G[b][t] = r[b][t] + gamma * after
    return torch.tensor(G, dtype=torch.float64)


def loop_gae(rewards, values, gamma, lam, dones=None, truncations=None, bootstrap=None, final_values=None):
    r, v, d, tr, bs, fv = map(_rows, (rewards, values, dones, truncations, bootstrap, final_values))
    B, T = rewards.shape
    A = [[0.0] * T for _ in range(B)]
    for b in range(B):
        for t in reversed(range(T)):
            next_v, cont = _after(b, t, T, lambda b_, t_: v[b_][t_], d, tr, fv, bs)
            delta = r[b][t] + gamma * next_v - v[b][t]
            next_adv = A[b][t + 1] if (cont and t + 1 < T) else 0.0
            A[b][t] = delta + gamma * lam * next_adv
    adv = torch.tensor(A, dtype=torch.float64)
    return adv, adv + values.detach().double()


def loop_lambda_returns(rewards, values, gamma, lam, dones=None, truncations=None, bootstrap=None, final_values=None):
    r, v, d, tr, bs, fv = map(_rows, (rewards, values, dones, truncations, bootstrap, final_values))
    B, T = rewards.shape
    G = [[0.0] * T for _ in range(B)]
    for b in range(B):
        for t in reversed(range(T)):
            if _flag(d, b, t) or _flag(tr, b, t) or t == T - 1:
                after, _ = _after(b, t, T, None, d, tr, fv, bs)  # V_T = G_T = bootstrap
            else:
                after = (1 - lam) * v[b][t + 1] + lam * G[b][t + 1]
            G[b][t] = r[b][t] + gamma * after
    return torch.tensor(G, dtype=torch.float64)


def loop_vtrace(
    behaviour,
    target,
    rewards,
    values,
    gamma,
    rho_bar=1.0,
    c_bar=1.0,
    pg_rho_bar=None,
    lam=1.0,
    dones=None,
    truncations=None,
    bootstrap=None,
    final_values=None,
):
    mu, pi, r, v, d, tr, bs, fv = map(
        _rows, (behaviour, target, rewards, values, dones, truncations, bootstrap, final_values)
    )
    pg_rho_bar = rho_bar if pg_rho_bar is None else pg_rho_bar
    B, T = rewards.shape

    def clip(bar, log_ratio):
        ratio = math.exp(log_ratio) if log_ratio < 700 else math.inf
        return min(bar, ratio)

    vs = [[0.0] * T for _ in range(B)]
    pg = [[0.0] * T for _ in range(B)]
    rhos = [[0.0] * T for _ in range(B)]
    for b in range(B):
        for t in reversed(range(T)):
            log_ratio = pi[b][t] - mu[b][t]
            rho, c = clip(rho_bar, log_ratio), lam * clip(c_bar, log_ratio)
            next_v, cont = _after(b, t, T, lambda b_, t_: v[b_][t_], d, tr, fv, bs)
            correction = 0.0
            if cont and t + 1 < T:
                correction = gamma * c * (vs[b][t + 1] - v[b][t + 1])
            vs[b][t] = v[b][t] + rho * (r[b][t] + gamma * next_v - v[b][t]) + correction
            next_vs, _ = _after(b, t, T, lambda b_, t_: vs[b_][t_], d, tr, fv, bs)
            pg[b][t] = clip(pg_rho_bar, log_ratio) * (r[b][t] + gamma * next_vs - v[b][t])
            rhos[b][t] = rho
    return tuple(torch.tensor(z, dtype=torch.float64) for z in (vs, pg, rhos))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

MASK_DTYPES = [torch.bool, torch.int64, torch.float32]
CASES = {
    "plain": (),
    "bootstrap": ("bootstrap",),
    "dones": ("dones",),
    "dones+bootstrap": ("dones", "bootstrap"),
    "truncations": ("truncations",),
    "truncations+final_values": ("truncations", "final_values"),
    "all": ("dones", "truncations", "final_values", "bootstrap"),
    "dones+truncations+bootstrap": ("dones", "truncations", "bootstrap"),
}


def make_batch(B=4, T=11, *, seed=0, parts=(), mask_dtype=torch.bool, dtype=torch.float64, p_end=0.2):
    """Random rollout tensors; masks are drawn independently, so some steps are both done and
    truncated, and the last step sometimes ends an episode."""
    g = torch.Generator().manual_seed(seed)
    out = {
        "rewards": torch.randn(B, T, generator=g, dtype=torch.float64).to(dtype),
        "values": torch.randn(B, T, generator=g, dtype=torch.float64).to(dtype),
    }
    opt = {}
    if "dones" in parts:
        opt["dones"] = (torch.rand(B, T, generator=g) < p_end).to(mask_dtype)
    if "truncations" in parts:
        opt["truncations"] = (torch.rand(B, T, generator=g) < p_end).to(mask_dtype)
    if "final_values" in parts:
        opt["final_values"] = torch.randn(B, T, generator=g, dtype=torch.float64).to(dtype)
    if "bootstrap" in parts:
        opt["bootstrap"] = torch.randn(B, generator=g, dtype=torch.float64).to(dtype)
    return out, opt


def case_params():
    params = []
    for name, parts in CASES.items():
        masks = [m for m in MASK_DTYPES] if {"dones", "truncations"} & set(parts) else [torch.bool]
        for m in masks:
            params.append(pytest.param(parts, m, id=f"{name}-{str(m).removeprefix('torch.')}"))
    return params


def assert_f64_close(got, want):
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


BACKENDS = [backend_param(b) for b in CPU_BACKENDS]

# --------------------------------------------------------------------------------------------
# Against the loops
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("parts", "mask_dtype"), case_params())
def test_discounted_returns_matches_loop(backend, parts, mask_dtype):
    data, opt = make_batch(seed=1, parts=parts, mask_dtype=mask_dtype)
    with metakern.use_backend(backend):
        got = metakern.discounted_returns(data["rewards"], GAMMA, **opt)
    assert_f64_close(got, loop_discounted_returns(data["rewards"], GAMMA, **opt))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("parts", "mask_dtype"), case_params())
def test_gae_matches_loop(backend, parts, mask_dtype):
    data, opt = make_batch(seed=2, parts=parts, mask_dtype=mask_dtype)
    with metakern.use_backend(backend):
        got = metakern.gae(data["rewards"], data["values"], GAMMA, LAM, **opt)
    adv, ret = loop_gae(data["rewards"], data["values"], GAMMA, LAM, **opt)
    assert isinstance(got, metakern.returns.GAE)
    assert_f64_close(got.advantages, adv)
    assert_f64_close(got.returns, ret)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("parts", "mask_dtype"), case_params())
def test_lambda_returns_matches_loop(backend, parts, mask_dtype):
    data, opt = make_batch(seed=3, parts=parts, mask_dtype=mask_dtype)
    with metakern.use_backend(backend):
        got = metakern.lambda_returns(data["rewards"], data["values"], GAMMA, LAM, **opt)
    assert_f64_close(got, loop_lambda_returns(data["rewards"], data["values"], GAMMA, LAM, **opt))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("parts", "mask_dtype"), case_params())
@pytest.mark.parametrize(
    "clip",
    [
        {},
        {"rho_bar": 1.5, "c_bar": 0.7, "lam": 0.9},
        {"rho_bar": 2.0, "c_bar": 1.0, "pg_rho_bar": 0.5},
        {"rho_bar": 0.0, "c_bar": 0.0},
    ],
    ids=["default", "bars+lam", "pg_rho_bar", "zero_bars"],
)
def test_vtrace_matches_loop(backend, parts, mask_dtype, clip):
    data, opt = make_batch(seed=4, parts=parts, mask_dtype=mask_dtype)
    g = torch.Generator().manual_seed(40)
    mu = torch.randn(*data["rewards"].shape, generator=g, dtype=torch.float64) - 1.0
    pi = mu + torch.randn(*mu.shape, generator=g, dtype=torch.float64)
    with metakern.use_backend(backend):
        got = metakern.vtrace(mu, pi, data["rewards"], data["values"], GAMMA, **clip, **opt)
    want = loop_vtrace(mu, pi, data["rewards"], data["values"], GAMMA, **clip, **opt)
    assert isinstance(got, metakern.returns.VTrace)
    for got_part, want_part in zip(got, want, strict=True):  # vs, pg_advantages, clipped_rhos
        assert_f64_close(got_part, want_part)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_float32_inputs_stay_float32(dtype):
    data, opt = make_batch(B=3, T=40, seed=5, parts=CASES["all"], dtype=dtype)
    r, v = data["rewards"], data["values"]
    outs = {
        "discounted_returns": (metakern.discounted_returns(r, GAMMA, **opt), loop_discounted_returns(r, GAMMA, **opt)),
        "gae": (metakern.gae(r, v, GAMMA, LAM, **opt).advantages, loop_gae(r, v, GAMMA, LAM, **opt)[0]),
        "lambda_returns": (
            metakern.lambda_returns(r, v, GAMMA, LAM, **opt),
            loop_lambda_returns(r, v, GAMMA, LAM, **opt),
        ),
    }
    for name, (got, want) in outs.items():
        assert got.dtype == dtype, name
        assert rel_rms_err(got, want) < (1e-6 if dtype == torch.float32 else 1e-12), name


def test_16bit_discounted_returns_within_rounding():
    """bf16 rewards with a float discount: the result should be the float64 return rounded to
    bf16 (fp32 accumulation), not the return for gamma rounded to bf16 (0.98828125 for 0.99)."""
    g = torch.Generator().manual_seed(6)
    rewards = torch.randn(4, 300, generator=g, dtype=torch.float64).to(torch.bfloat16)
    got = metakern.discounted_returns(rewards, 0.99)
    want = loop_discounted_returns(rewards, 0.99)
    assert got.dtype == torch.bfloat16
    assert rel_rms_err(got, want) < 1e-2


# --------------------------------------------------------------------------------------------
# Episode boundaries, spelled out
# --------------------------------------------------------------------------------------------


def test_done_and_truncated_at_the_same_step_does_not_bootstrap():
    """A terminated step has no successor value, even if the episode was also truncated there
    and final_values holds something: termination wins."""
    r = torch.ones(1, 3, dtype=torch.float64)
    flag = torch.tensor([[False, True, False]])
    fv = torch.full((1, 3), 100.0, dtype=torch.float64)
    got = metakern.discounted_returns(r, 0.5, dones=flag, truncations=flag, final_values=fv)
    torch.testing.assert_close(got, torch.tensor([[1.5, 1.0, 1.0]], dtype=torch.float64))
    adv = metakern.gae(r, torch.zeros_like(r), 0.5, 1.0, dones=flag, truncations=flag, final_values=fv).advantages
    torch.testing.assert_close(adv, torch.tensor([[1.5, 1.0, 1.0]], dtype=torch.float64))


def test_done_on_last_step_ignores_bootstrap():
    r = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    dones = torch.tensor([[0, 1]])
    got = metakern.discounted_returns(r, 0.5, dones=dones, bootstrap=torch.tensor([1000.0], dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor([[2.0, 2.0]], dtype=torch.float64))


def test_truncation_bootstraps_final_value_and_cuts_the_return():
    r = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    tr = torch.tensor([[0.0, 1.0, 0.0]])
    fv = torch.tensor([[7.0, 10.0, 7.0]], dtype=torch.float64)
    boot = torch.tensor([4.0], dtype=torch.float64)
    got = metakern.discounted_returns(r, 0.5, truncations=tr, final_values=fv, bootstrap=boot)
    # step 2: 1 + 0.5 * 4; step 1 (cut): 1 + 0.5 * 10; step 0: 1 + 0.5 * 6
    torch.testing.assert_close(got, torch.tensor([[4.0, 6.0, 3.0]], dtype=torch.float64))
    no_fv = metakern.discounted_returns(r, 0.5, truncations=tr, bootstrap=boot)
    torch.testing.assert_close(no_fv, torch.tensor([[1.5, 1.0, 3.0]], dtype=torch.float64))


@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_non_contiguous_masks_are_accepted(layout):
    """Masks may be any layout (only the floating inputs must be contiguous)."""
    data, opt = make_batch(B=3, T=8, seed=7, parts=("dones", "truncations", "final_values"))
    if layout == "transposed":
        masks = {k: opt[k].t().contiguous().t() for k in ("dones", "truncations")}
    else:
        masks = {k: opt[k].repeat_interleave(2, dim=1)[:, ::2] for k in ("dones", "truncations")}
    for k, m in masks.items():
        assert not m.is_contiguous() and torch.equal(m, opt[k])
    r, v = data["rewards"], data["values"]
    kwargs = {**opt, **masks}
    assert_f64_close(metakern.discounted_returns(r, GAMMA, **kwargs), loop_discounted_returns(r, GAMMA, **opt))
    assert_f64_close(metakern.gae(r, v, GAMMA, LAM, **kwargs).advantages, loop_gae(r, v, GAMMA, LAM, **opt)[0])
    assert_f64_close(metakern.lambda_returns(r, v, GAMMA, LAM, **kwargs), loop_lambda_returns(r, v, GAMMA, LAM, **opt))
    assert_f64_close(metakern.vtrace(v, v, r, v, GAMMA, **kwargs).vs, loop_vtrace(v, v, r, v, GAMMA, **opt)[0])


# --------------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("parts", "mask_dtype"), case_params())
def test_lambda_returns_equal_gae_returns(parts, mask_dtype):
    data, opt = make_batch(B=5, T=23, seed=8, parts=parts, mask_dtype=mask_dtype)
    lr = metakern.lambda_returns(data["rewards"], data["values"], GAMMA, LAM, **opt)
    assert_f64_close(lr, metakern.gae(data["rewards"], data["values"], GAMMA, LAM, **opt).returns)


@pytest.mark.parametrize(("parts", "mask_dtype"), case_params())
def test_gae_lambda_one_is_returns_minus_values(parts, mask_dtype):
    data, opt = make_batch(B=5, T=23, seed=9, parts=parts, mask_dtype=mask_dtype)
    adv = metakern.gae(data["rewards"], data["values"], GAMMA, 1.0, **opt).advantages
    ret = metakern.discounted_returns(data["rewards"], GAMMA, **opt)
    assert_f64_close(adv, ret - data["values"])
    lam0 = metakern.lambda_returns(data["rewards"], data["values"], GAMMA, 1.0, **opt)
    assert_f64_close(lam0, ret)


@pytest.mark.parametrize(("parts", "mask_dtype"), case_params())
def test_on_policy_vtrace_is_the_discounted_return(parts, mask_dtype):
    data, opt = make_batch(B=5, T=23, seed=10, parts=parts, mask_dtype=mask_dtype)
    r, v = data["rewards"], data["values"]
    logp = torch.randn(r.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    out = metakern.vtrace(logp, logp.clone(), r, v, GAMMA, rho_bar=1.0, c_bar=1.0, lam=1.0, **opt)
    ret = metakern.discounted_returns(r, GAMMA, **opt)
    assert_f64_close(out.vs, ret)
    assert_f64_close(out.vs, metakern.lambda_returns(r, v, GAMMA, 1.0, **opt))
    assert_f64_close(out.clipped_rhos, torch.ones_like(r))
    # pg advantage r_t + gamma * vs_{t+1} - V_t = G_t - V_t on-policy (vs_{t+1} = G_{t+1}).
    assert_f64_close(out.pg_advantages, ret - v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_vtrace_huge_log_ratios_do_not_overflow(dtype):
    data, opt = make_batch(B=3, T=12, seed=12, parts=("dones", "bootstrap"), dtype=dtype)
    r, v = data["rewards"], data["values"]
    mu = torch.zeros_like(r)
    sign = torch.tensor([1.0, -1.0], dtype=dtype).repeat(r.shape[0], r.shape[1] // 2)
    pi = (1000.0 * sign).requires_grad_()
    out = metakern.vtrace(mu, pi, r, v, GAMMA, rho_bar=1.0, c_bar=1.0, **opt)
    for t in out:
        assert torch.isfinite(t).all()
    assert torch.equal(out.clipped_rhos[sign > 0], torch.ones_like(r)[sign > 0])
    assert torch.equal(out.clipped_rhos[sign < 0], torch.zeros_like(r)[sign < 0])
    (grad,) = torch.autograd.grad(out.vs.sum() + out.pg_advantages.sum(), pi)
    assert torch.isfinite(grad).all()
    big_bar = metakern.vtrace(mu, pi.detach(), r, v, GAMMA, rho_bar=5.0, c_bar=3.0, **opt)
    torch.testing.assert_close(big_bar.clipped_rhos[sign > 0], torch.full_like(r, 5.0)[sign > 0])


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def test_gae_gradcheck():
    data, opt = make_batch(B=2, T=5, seed=13, parts=("dones", "truncations", "final_values", "bootstrap"))
    r = data["rewards"].requires_grad_()
    v = data["values"].requires_grad_()

    def fn(r, v):
        out = metakern.gae(r, v, GAMMA, LAM, **opt)
        return out.advantages, out.returns

    assert torch.autograd.gradcheck(fn, (r, v))
    assert torch.autograd.gradgradcheck(fn, (r, v))


def test_vtrace_gradcheck():
    data, opt = make_batch(B=2, T=5, seed=14, parts=("dones", "bootstrap"))
    g = torch.Generator().manual_seed(15)
    mu = torch.randn(2, 5, generator=g, dtype=torch.float64)
    # log-ratios kept away from the clipping kinks at log(rho_bar) = 0 and log(c_bar) = log(0.8)
    sign = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0], [-1.0, 1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    offsets = (0.4 + torch.rand(2, 5, generator=g, dtype=torch.float64)) * sign
    pi = (mu + offsets).requires_grad_()
    v = data["values"].requires_grad_()

    def fn(pi, v):
        out = metakern.vtrace(mu, pi, data["rewards"], v, GAMMA, rho_bar=1.0, c_bar=0.8, **opt)
        return out.vs, out.pg_advantages

    assert torch.autograd.gradcheck(fn, (pi, v))
    assert torch.autograd.gradgradcheck(fn, (pi, v))


def test_discounted_returns_grad_flows_to_bootstrap_and_final_values():
    data, opt = make_batch(B=2, T=6, seed=16, parts=("truncations", "final_values", "bootstrap"))
    r = data["rewards"].requires_grad_()
    boot = opt.pop("bootstrap").requires_grad_()
    fv = opt.pop("final_values").requires_grad_()

    def fn(r, boot, fv):
        return metakern.discounted_returns(r, GAMMA, bootstrap=boot, final_values=fv, **opt)

    assert torch.autograd.gradcheck(fn, (r, boot, fv))
