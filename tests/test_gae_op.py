"""metakern::gae: the fused C++ kernel against the composite path, opcheck, derivatives to second
order for every optional input, and bad input to the raw op."""

import itertools

import metakern
import pytest
import torch
from conftest import backend_param, rel_rms_err

gae_op = torch.ops.metakern.gae.default
OPTIONS = list(itertools.product([False, True], repeat=3))  # (cont, cut, bootstrap) present?


def gae_inputs(B, T, dtype, options, *, time_major, seed, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    shape = (T, B) if time_major else (B, T)
    r, v, fv = (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    done = torch.rand(shape, generator=g) < 0.2
    trunc = (torch.rand(shape, generator=g) < 0.1) & ~done
    has_cont, has_cut, has_boot = options
    cont = ((~done & ~trunc) if has_cut else ~done).to(dtype) if has_cont or has_cut else None
    cut = (trunc.to(dtype) * fv) if has_cut else None
    boot = torch.randn(B, generator=g, dtype=torch.float64).to(dtype) if has_boot else None
    for t in (r, v, cut, boot):
        if t is not None:
            t.requires_grad_(requires_grad)
    return r, v, cont, cut, boot


@pytest.mark.parametrize("time_major", [False, True], ids=["BT", "TB"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "".join("CUB"[i] if x else "-" for i, x in enumerate(o)))
@pytest.mark.parametrize(("B", "T"), [(1, 1), (3, 2), (5, 63), (1030, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_fused_matches_composite(dtype, B, T, options, time_major):
    args = gae_inputs(B, T, dtype, options, time_major=time_major, seed=B * 31 + T)
    with metakern.use_backend("reference"):
        e_adv, e_ret = gae_op(*args, 0.97, 0.9, time_major)
    with metakern.use_backend("cpp"):
        adv, ret = gae_op(*args, 0.97, 0.9, time_major)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel_rms_err(adv, e_adv) <= tol and rel_rms_err(ret, e_ret) <= tol


@pytest.mark.parametrize("time_major", [False, True], ids=["BT", "TB"])
@pytest.mark.parametrize("options", [(False, False, False), (True, True, True), (True, False, True)])
def test_opcheck(options, time_major):
    args = gae_inputs(4, 6, torch.float64, options, time_major=time_major, seed=2, requires_grad=True)
    torch.library.opcheck(gae_op, (*args, 0.9, 0.8, time_major))


@pytest.mark.parametrize("time_major", [False, True], ids=["BT", "TB"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "".join("CUB"[i] if x else "-" for i, x in enumerate(o)))
@pytest.mark.parametrize("backend", [backend_param(b) for b in ("cpp", "reference")])
def test_gradcheck_and_gradgradcheck(backend, options, time_major):
    r, v, cont, cut, boot = gae_inputs(3, 5, torch.float64, options, time_major=time_major, seed=9, requires_grad=True)
    diff = [t for t in (r, v, cut, boot) if t is not None]

    def fn(*xs):
        it = iter(xs)
        rr, vv = next(it), next(it)
        cc = next(it) if cut is not None else None
        bb = next(it) if boot is not None else None
        return gae_op(rr, vv, cont, cc, bb, 0.9, 0.8, time_major)

    with metakern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, diff)
        assert torch.autograd.gradgradcheck(fn, diff)


def test_raw_op_rejects_bad_input():
    r, v, cont, cut, boot = gae_inputs(3, 4, torch.float32, (True, True, True), time_major=False, seed=0)
    with pytest.raises(ValueError, match="bootstrap: expected shape"):
        gae_op(r, v, cont, cut, torch.zeros(4), 0.9, 0.9)
    with pytest.raises(TypeError, match="cont: expected dtype"):
        gae_op(r, v, cont.double(), cut, boot, 0.9, 0.9)
    with pytest.raises(ValueError, match="cut: expected a contiguous"):
        gae_op(r, v, cont, cut.t().contiguous().t(), boot, 0.9, 0.9)
    with pytest.raises(ValueError, match="values: expected shape"):
        gae_op(r, v[:, :2].contiguous(), cont, cut, boot, 0.9, 0.9)
