"""The Triton backend of metakern::metods_synapse (``kernels/synapse.py``) against the reference.

On this CPU-only machine the kernels run under TRITON_INTERPRET=1 (set by conftest.py), which runs
each program in Python: sizes stay small. On a machine with CUDA, conftest leaves the interpreter off
and the same tests run the compiled kernels on the GPU. The streaming path (N above the on-chip
limit) is reached by lowering ``MAX_ON_CHIP_N`` and ``STREAM_TILE``, so that small N still spans
several row blocks, the last one partial; ``ONE_PASS_MAX_C`` is lowered so that short segments
exercise the nested (sqrt-split) recompute of the backward as well as the one-pass one.
"""

import pytest

pytest.importorskip("triton")

import metakern
import metakern.kernels.synapse as kernels
import torch
import triton
import triton.language as tl
from conftest import GRAD_TOLERANCES, TOLERANCES, assert_close_dtype, rel_rms_err
from metakern import _backend
from metakern.ops.synapse import (
    metods_closed_form,
    metods_closed_form_backward,
    metods_synapse,
    num_checkpoints,
)
from metakern.ops.synapse_reference import ACTIVATIONS, metods_synapse_reference, synapse_coefficients

DEVICE = "cuda" if torch.cuda.is_available() and not _backend.triton_interpreted() else "cpu"
_REASON = _backend.unavailable_reason("triton", DEVICE)
pytestmark = [pytest.mark.triton, pytest.mark.skipif(_REASON is not None, reason=f"triton on {DEVICE}: {_REASON}")]

F64, F32 = torch.float64, torch.float32


@pytest.fixture(autouse=True)
def _two_pass_recompute(monkeypatch):
    """Segments of C > 2 steps are recomputed with the nested sqrt split: both modes get tested."""
    monkeypatch.setattr(kernels, "ONE_PASS_MAX_C", 2)


@pytest.fixture
def streaming(monkeypatch):
    """Forces the streaming path (forward and backward) for N > 4, with 2-row blocks for N in 5..8."""
    monkeypatch.setattr(kernels, "MAX_ON_CHIP_N", 4)
    monkeypatch.setattr(kernels, "MAX_ON_CHIP_N_BACKWARD", 4)
    monkeypatch.setattr(kernels, "STREAM_TILE", 16)
    for backward in (False, True):
        assert not kernels._geometry(5, 2, backward)["on_chip"] and kernels._geometry(8, 3, backward)["BR"] == 2


@pytest.fixture(autouse=True)
def _small_recompute_blocks(monkeypatch):
    """The on-chip backward recomputes W_in in 2-row blocks for N in 5..8 (as N = 128 does in 16-row ones)."""
    monkeypatch.setattr(kernels, "RECOMPUTE_TILE", 16)


def make_inputs(B, T, N, S, dtype, shared, resets, seed):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)

    v0 = randn(B, T, N)
    W0 = randn(*((N, N) if shared else (B, N, N)), scale=N**-0.5)
    alpha = randn(N, N, scale=0.3)
    kappa = randn(S, S + 1, scale=0.5)
    beta = randn(S, S + 1, scale=0.5)
    reset = None
    if resets:
        reset = torch.rand(B, T, generator=g) < 0.25
        reset[0, T // 2] = True  # at least one reset in the middle of a sequence
    tensors = [t.to(DEVICE) for t in (v0, W0, alpha, kappa, beta)]
    return tensors, (None if reset is None else reset.to(DEVICE))


def check(actual, expected, dtype, what, grad=False):
    if dtype == F64:
        err = rel_rms_err(actual, expected)
        tol = GRAD_TOLERANCES[F64] if grad else TOLERANCES[F64]["rms"]
        assert err <= tol, f"{what}: rel RMS error {err:.3e} > {tol:.1e}"
        assert_close_dtype(actual, expected, F64)
    else:
        err = rel_rms_err(actual, expected)
        tol = GRAD_TOLERANCES[dtype] if grad else TOLERANCES[dtype]["rms"]
        assert err <= tol, f"{what}: rel RMS error {err:.3e} > {tol:.1e} for {dtype}"


def compare_with_reference(B, T, N, S, dtype, act, C, shared, resets, seed=0):
    """Outputs and the gradients w.r.t. v0, W0, alpha, kappa, beta of the public op on the Triton
    backend against plain autograd through the naive loop, in float64 from the same inputs."""
    params, reset = make_inputs(B, T, N, S, dtype, shared, resets, seed)
    g = torch.Generator().manual_seed(seed + 1)
    gv = torch.randn(B, T, N, generator=g, dtype=F64).to(DEVICE)
    gw = torch.randn(B, N, N, generator=g, dtype=F64).to(DEVICE)
    ref = [p.detach().double().requires_grad_() for p in params]
    vS_r, WT_r = metods_synapse_reference(*ref, reset, act)
    grads_r = torch.autograd.grad((vS_r * gv).sum() + (WT_r * gw).sum(), ref)
    mine = [p.detach().clone().requires_grad_() for p in params]
    with metakern.use_backend("triton"):
        vS, WT = metods_synapse(*mine, reset, activation=act, checkpoint_every=C)
        grads = torch.autograd.grad((vS * gv.to(dtype)).sum() + (WT * gw.to(dtype)).sum(), mine)
    assert vS.dtype == dtype and WT.dtype == dtype
    check(vS, vS_r, dtype, "v_S")
    check(WT, WT_r, dtype, "W_T")
    for name, a, e in zip(("v0", "W0", "alpha", "kappa", "beta"), grads, grads_r, strict=True):
        assert a.shape == e.shape, name
        check(a, e, dtype, f"d{name}", grad=True)


# (dtype, B, T, N, S, activation, checkpoint_every (None: the op's default; 100: C = T), shared W0, resets)
ON_CHIP_CASES = [
    (F64, 2, 5, 3, 1, "tanh", None, False, True),
    (F64, 3, 7, 5, 2, "relu", 2, True, True),
    (F64, 2, 9, 8, 3, "identity", 3, False, True),
    (F64, 2, 7, 5, 3, "tanh", 2, True, True),
    (F64, 1, 1, 3, 2, "tanh", None, True, False),
    (F64, 2, 6, 8, 2, "relu", 100, False, False),
    (F32, 2, 7, 8, 3, "tanh", 3, False, True),
    (F32, 2, 6, 5, 2, "relu", None, True, True),
]
STREAMING_CASES = [
    (F64, 2, 6, 5, 2, "tanh", 2, True, True),
    (F64, 2, 5, 8, 2, "relu", None, False, True),
    (F32, 2, 5, 5, 3, "identity", 3, False, True),
]


def case_id(case):
    dtype, B, T, N, S, act, C, shared, resets = case
    w0 = "sharedW0" if shared else "batchedW0"
    return f"{str(dtype)[6:]}-B{B}-T{T}-N{N}-S{S}-{act}-C{C}-{w0}{'-reset' if resets else ''}"


@pytest.mark.parametrize("case", ON_CHIP_CASES, ids=case_id)
def test_on_chip_matches_reference(case):
    compare_with_reference(*case[1:5], case[0], *case[5:])


@pytest.mark.parametrize("case", STREAMING_CASES, ids=case_id)
def test_streaming_matches_reference(case, streaming):
    compare_with_reference(*case[1:5], case[0], *case[5:])


def test_on_chip_forward_streaming_backward(monkeypatch):
    """64 < N <= 128 by default: the backward streams over what the on-chip forward saved."""
    monkeypatch.setattr(kernels, "MAX_ON_CHIP_N_BACKWARD", 4)
    monkeypatch.setattr(kernels, "STREAM_TILE", 16)
    assert kernels._geometry(5, 2, False)["on_chip"] and not kernels._geometry(5, 2, True)["on_chip"]
    compare_with_reference(2, 5, 5, 2, F64, "tanh", 3, True, True)


def closed_form_trajectory(v0, W0, alpha, kappa, gamma, coef, reset, act):
    """(vs [B, T, S, N], ps [B, T, S, N], W_in [B, T, N, N]) of the closed form, step by step."""
    B, T, N = v0.shape
    S = kappa.shape[0]
    W0b = W0.expand(B, N, N)
    W, vs, ps, win = W0b, [], [], []
    for t in range(T):
        if reset is not None and t > 0:
            W = torch.where(reset[:, t].reshape(B, 1, 1), W0b, W)
        win.append(W)
        step_vs = []
        for s in range(1, S + 1):
            # v_s is the output of the first s inner steps: the closed form with S = s.
            vS_s, _, _ = metods_closed_form(v0[:, t : t + 1], W, alpha, kappa[:s, : s + 1], gamma[: s + 1],
                                            coef[: s + 1, :s], None, act)  # fmt: skip
            step_vs.append(vS_s[:, 0])
        _, W, p = metods_closed_form(v0[:, t : t + 1], W, alpha, kappa, gamma, coef, None, act)
        vs.append(torch.stack(step_vs, 1))
        ps.append(p[:, 0])
    return torch.stack(vs, 1), torch.stack(ps, 1), torch.stack(win, 1)


@pytest.mark.parametrize("path", ["on_chip", "streaming"])
def test_saved_tensors(path, request):
    """The saved-tensor layout of metods.h: vs, ps [B, T, S, N] and the W_in of steps C, 2C, ...;
    and empty saved tensors (as ``_empty_saved``) with the same outputs when not saving."""
    if path == "streaming":
        request.getfixturevalue("streaming")
    B, T, N, S, C = 2, 7, 5, 2, 3
    (v0, W0, alpha, kappa, beta), reset = make_inputs(B, T, N, S, F64, True, True, seed=3)
    gamma, coef = synapse_coefficients(beta)
    flags = reset.contiguous()
    vS, WT, vs, ps, ckpt = kernels.metods_forward_triton(v0, W0, alpha, kappa, gamma, coef, flags, 0, C, True)
    vs_r, ps_r, win_r = closed_form_trajectory(v0, W0, alpha, kappa, gamma, coef, reset, "tanh")
    K = num_checkpoints(T, C)
    assert ckpt.shape == (B, K, N, N) and vs.shape == ps.shape == (B, T, S, N)
    assert_close_dtype(vs, vs_r, F64)
    assert_close_dtype(ps, ps_r, F64)
    assert_close_dtype(ckpt, win_r[:, C::C][:, :K], F64)
    assert_close_dtype(vS, vs_r[:, :, -1], F64)
    out = kernels.metods_forward_triton(v0, W0, alpha, kappa, gamma, coef, flags, 0, C, False)
    assert [tuple(t.shape) for t in out[2:]] == [(B, 0, S, N), (B, 0, S, N), (B, 0, N, N)]
    assert torch.equal(out[0], vS) and torch.equal(out[1], WT)


@pytest.mark.parametrize("path", ["on_chip", "streaming"])
def test_backward_matches_closed_form_adjoint(path, request):
    """Each of the six backward outputs (gamma and coef separately, not only through beta) against
    ``metods_closed_form_backward``; twice, bit for bit (no atomics in the reductions over B)."""
    if path == "streaming":
        request.getfixturevalue("streaming")
    B, T, N, S, C, act = 2, 5, 5, 3, 3, 1
    (v0, W0, alpha, kappa, beta), reset = make_inputs(B, T, N, S, F64, True, True, seed=5)
    gamma, coef = synapse_coefficients(beta)
    g = torch.Generator().manual_seed(6)
    gvS = torch.randn(B, T, N, generator=g, dtype=F64).to(DEVICE)
    gWT = torch.randn(B, N, N, generator=g, dtype=F64).to(DEVICE)
    flags = reset.contiguous()
    _, _, vs, ps, ckpt = kernels.metods_forward_triton(v0, W0, alpha, kappa, gamma, coef, flags, act, C, True)
    args = (gvS, gWT, v0, W0, alpha, kappa, gamma, coef, flags, vs, ps, ckpt, act, C)
    first = kernels.metods_backward_triton(*args)
    expected = metods_closed_form_backward(gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, ACTIVATIONS[act])
    for name, a, e in zip(("dv0", "dW0", "dalpha", "dkappa", "dgamma", "dcoef"), first, expected, strict=True):
        assert a.shape == e.shape, name
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10, msg=lambda m, name=name: f"{name}: {m}")
    again = kernels.metods_backward_triton(*args)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@triton.jit
def _tanh_kernel(x_ptr, y_ptr, n, SMALL: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    m = offs < n
    tl.store(y_ptr + offs, kernels._tanh(tl.load(x_ptr + offs, mask=m, other=0.0), SMALL), mask=m)


@pytest.mark.parametrize(("dtype", "max_rel"), [(F64, 4e-15), (F32, 1e-6)], ids=["float64", "float32"])
def test_tanh_accuracy(dtype, max_rel):
    """The kernels' tanh (no tl.tanh; no libdevice under the interpreter) to a few ulps, on both sides
    of the switch between the series and the exponential form."""
    mag = torch.cat([torch.logspace(-12, 1.3, 200, dtype=F64), torch.tensor([0.0625, 0.25, 40.0], dtype=F64)])
    x = torch.cat([mag, -mag, torch.zeros(1, dtype=F64)]).to(dtype).to(DEVICE)
    y = torch.empty_like(x)
    _tanh_kernel[(1,)](x, y, x.numel(), SMALL=kernels._tanh_small(dtype), BLOCK=triton.next_power_of_2(x.numel()))
    exact = torch.tanh(x.double())
    rel = ((y.double() - exact).abs() / exact.abs().clamp_min(1e-300)).max().item()
    assert rel <= max_rel, f"max relative error {rel:.2e}"
