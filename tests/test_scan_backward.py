"""metakern::linear_scan_backward: the fused C++ backward against the composite one, opcheck,
and its own derivatives (second and third order of the scan)."""

import metakern
import pytest
import torch
from conftest import FLOAT_DTYPES, GRAD_TOLERANCES, backend_param, rel_rms_err
from metakern.ops import linear_scan_reference
from test_scan import dtype_id, make_inputs, seed_of

backward_op = torch.ops.metakern.linear_scan_backward.default
LAYOUTS = [False, True]


def backward_inputs(B, T, dtype, *, reverse, time_major, seed, requires_grad=False):
    x, a, c = make_inputs(B, T, dtype, seed=seed)
    y = linear_scan_reference(x, a, c, reverse)
    gy = torch.randn(B, T, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64).to(dtype)
    if time_major:
        gy, a, y = (t.t().contiguous() for t in (gy, a, y))
    return tuple(t.requires_grad_(requires_grad) for t in (gy, a, y, c))


def autograd_expected(gy, a, y, c, reverse, time_major):
    """g and da from autograd through the reference loop (independent of both implementations)."""
    t = (lambda v: v.t()) if time_major else (lambda v: v)
    a64 = t(a).detach().double().requires_grad_()
    # y is an input of the backward: rebuild the x for which the reference reproduces it
    y64, c64 = t(y).detach().double(), c.detach().double()
    prev = torch.cat([c64[:, None], y64[:, :-1]], 1) if not reverse else torch.cat([y64[:, 1:], c64[:, None]], 1)
    x = (y64 - a64.detach() * prev).requires_grad_()
    out = linear_scan_reference(x, a64, c64, reverse)
    g, da = torch.autograd.grad(out, (x, a64), t(gy).double())
    return t(g), t(da)


@pytest.mark.parametrize("time_major", LAYOUTS, ids=["BT", "TB"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=dtype_id)
@pytest.mark.parametrize(("B", "T"), [(1, 1), (3, 2), (5, 63), (65, 257), (1030, 9)])
@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpp", "reference")])
def test_backward_matches_autograd(backend, B, T, dtype, reverse, time_major):
    gy, a, y, c = backward_inputs(B, T, dtype, reverse=reverse, time_major=time_major, seed=seed_of(B, T, reverse))
    with metakern.use_backend(backend):
        g, da = backward_op(gy, a, y, c, reverse, time_major, True)
        g_only, empty = backward_op(gy, a, y, c, reverse, time_major, False)
    eg, eda = autograd_expected(gy, a, y, c, reverse, time_major)
    tol = GRAD_TOLERANCES[dtype]
    assert g.dtype == gy.dtype and da.dtype == a.dtype and empty.numel() == 0
    assert rel_rms_err(g, eg) <= tol and rel_rms_err(da, eda) <= tol
    assert torch.equal(g_only, g)


@pytest.mark.parametrize("time_major", LAYOUTS, ids=["BT", "TB"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_backward_opcheck(reverse, time_major):
    for need_a in (True, False):
        args = backward_inputs(4, 7, torch.float64, reverse=reverse, time_major=time_major, seed=3, requires_grad=True)
        torch.library.opcheck(backward_op, (*args, reverse, time_major, need_a))


@pytest.mark.parametrize("time_major", LAYOUTS, ids=["BT", "TB"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpp", "reference")])
def test_backward_is_differentiable_twice(backend, reverse, time_major):
    """gradcheck of the backward op is the scan's second order; gradgradcheck its third."""
    args = backward_inputs(3, 5, torch.float64, reverse=reverse, time_major=time_major, seed=5, requires_grad=True)

    def fn(gy, a, y, c):
        return backward_op(gy, a, y, c, reverse, time_major, True)

    with metakern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, args)
        assert torch.autograd.gradgradcheck(fn, args)


def test_third_order_of_the_scan():
    """d^3/dx da dc of a scalar function of the scan, against the reference through autograd."""
    x, a, c = make_inputs(2, 6, torch.float64, seed=11, requires_grad=True)

    def third(scan):
        y = scan(x, a, c)
        (gx,) = torch.autograd.grad((y**2).sum(), x, create_graph=True)
        (ga,) = torch.autograd.grad((gx * a).sum(), a, create_graph=True)
        (gc,) = torch.autograd.grad(ga.sum(), c)
        return gc

    with metakern.use_backend("cpp"):
        got = third(metakern.linear_scan)
    torch.testing.assert_close(got, third(linear_scan_reference), rtol=1e-10, atol=1e-10)


def test_backward_rejects_bad_input():
    gy, a, y, c = backward_inputs(3, 4, torch.float32, reverse=False, time_major=False, seed=0)
    with pytest.raises(ValueError, match="y: expected shape"):
        backward_op(gy, a, y[:, :2].contiguous(), c, False, False, True)
    with pytest.raises(TypeError, match="y: expected dtype"):
        backward_op(gy, a, y.double(), c, False, False, True)
    with pytest.raises(ValueError, match="contiguous"):
        backward_op(gy.t().contiguous().t(), a, y, c, False, False, True)
