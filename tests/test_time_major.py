"""Time-major ([T, B]) layout: every backend against the reference on the transposed data,
gradients to second order, opcheck, and the returns helpers against their batch-major results."""

import metakern
import pytest
import torch
from conftest import CPU_BACKENDS, FLOAT_DTYPES, GRAD_TOLERANCES, assert_close_dtype, backend_param, rel_rms_err
from metakern.ops import linear_scan_reference
from test_scan import dtype_id, grid, make_inputs, seed_of

SIZES = [(1, 1), (3, 63), (65, 17), (1030, 5), (2, 257)]


def time_major_inputs(B, T, dtype, *, seed, requires_grad=False):
    """The batch-major inputs of make_inputs, laid out as contiguous [T, B] tensors."""
    x, a, c = make_inputs(B, T, dtype, seed=seed)
    xt, at = (t.t().contiguous().requires_grad_(requires_grad) for t in (x, a))
    return xt, at, c.requires_grad_(requires_grad)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(("backend", "dtype", "B", "T"), grid(CPU_BACKENDS, FLOAT_DTYPES, SIZES))
def test_time_major_matches_reference(backend, dtype, B, T, reverse):
    xt, at, c = time_major_inputs(B, T, dtype, seed=seed_of(B, T, reverse))
    with metakern.use_backend(backend):
        y = metakern.linear_scan(xt, at, c, reverse, time_major=True)
    assert y.shape == (T, B) and y.dtype == dtype and y.is_contiguous()
    expected = linear_scan_reference(xt.t().double(), at.t().double(), c.double(), reverse).t()
    assert_close_dtype(y, expected, dtype)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("backend", [backend_param(b) for b in CPU_BACKENDS])
def test_time_major_gradcheck_and_gradgradcheck(backend, reverse):
    xt, at, c = time_major_inputs(3, 6, torch.float64, seed=seed_of(3, 6, reverse), requires_grad=True)

    def fn(x, a, c):
        return metakern.linear_scan(x, a, c, reverse, time_major=True)

    with metakern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (xt, at, c))
        assert torch.autograd.gradgradcheck(fn, (xt, at, c))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_time_major_grads_equal_batch_major_grads(dtype, reverse):
    """The same numbers in the two layouts give the same gradients (transposed)."""
    x, a, c = make_inputs(5, 33, dtype, seed=seed_of(5, 33, reverse), requires_grad=True)
    w = torch.randn(5, 33, dtype=dtype)
    gx, ga, gc = torch.autograd.grad((metakern.linear_scan(x, a, c, reverse) * w).sum(), (x, a, c))
    xt, at = (t.detach().t().contiguous().requires_grad_() for t in (x, a))
    y = metakern.linear_scan(xt, at, c, reverse, time_major=True)
    gxt, gat, gct = torch.autograd.grad((y * w.t()).sum(), (xt, at, c))
    tol = GRAD_TOLERANCES[dtype]
    assert rel_rms_err(gxt.t(), gx) <= tol
    assert rel_rms_err(gat.t(), ga) <= tol
    assert rel_rms_err(gct, gc) <= tol


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_time_major_opcheck(reverse, requires_grad):
    xt, at, c = time_major_inputs(4, 7, torch.float64, seed=1, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.metakern.linear_scan.default, (xt, at, c, reverse, True))


def test_time_major_validation_names_the_layout():
    x = torch.randn(8, 3)  # [T, B]
    with pytest.raises(ValueError, match=r"carry: expected shape \[B\] of x \[T, B\] = \(3,\), got \(8,\)"):
        metakern.linear_scan(x, 0.5, torch.zeros(8), time_major=True)
    with pytest.raises(TypeError, match="time_major: expected a bool"):
        metakern.linear_scan(x, 0.5, time_major=1)


def _masks(T, B, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, generator=g) < 0.1, torch.rand(B, T, generator=g) < 0.05)


@pytest.mark.parametrize("backend", [backend_param(b) for b in ("reference", "cpp")])
def test_returns_helpers_time_major_equal_batch_major(backend):
    B, T = 6, 40
    g = torch.Generator().manual_seed(7)
    r, v, mu, pi, fv = (torch.randn(B, T, generator=g, dtype=torch.float64) for _ in range(5))
    boot = torch.randn(B, generator=g, dtype=torch.float64)
    dones, truncs = _masks(T, B, 3)
    kw = {"dones": dones, "truncations": truncs, "bootstrap": boot, "final_values": fv}
    tkw = {**kw, "dones": dones.t(), "truncations": truncs.t(), "final_values": fv.t().contiguous()}

    def T_(t):
        return t.t().contiguous()

    with metakern.use_backend(backend):
        pairs = [
            (metakern.discounted_returns(r, 0.9, **kw),
             metakern.discounted_returns(T_(r), 0.9, **tkw, time_major=True)),
            (metakern.lambda_returns(r, v, 0.9, 0.8, **kw),
             metakern.lambda_returns(T_(r), T_(v), 0.9, 0.8, **tkw, time_major=True)),
        ]  # fmt: skip
        adv, ret = metakern.gae(r, v, 0.9, 0.8, **kw)
        adv_t, ret_t = metakern.gae(T_(r), T_(v), 0.9, 0.8, **tkw, time_major=True)
        pairs += [(adv, adv_t), (ret, ret_t)]
        vt = metakern.vtrace(mu, pi, r, v, 0.9, rho_bar=1.5, c_bar=0.9, **kw)
        vt_t = metakern.vtrace(T_(mu), T_(pi), T_(r), T_(v), 0.9, rho_bar=1.5, c_bar=0.9, **tkw, time_major=True)
        pairs += list(zip(vt, vt_t, strict=True))
    for batch_major, time_major in pairs:
        assert time_major.shape == (T, B)
        torch.testing.assert_close(time_major.t(), batch_major, rtol=1e-12, atol=1e-12)
