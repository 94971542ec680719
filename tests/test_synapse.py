"""metakern.metods_synapse: the fused MetODS recurrence against the naive Algorithm-1 loop.

Every backend (C++ and the closed-form reference here; Triton in test_synapse_triton.py) is
compared with ``metods_synapse_reference`` differentiated by autograd: outputs and the gradients
w.r.t. v0, W0, alpha, kappa and beta, in float64 (to ~1e-10) and float32 (relative RMS error),
with odd sizes, resets in the middle of sequences, every activation, shared and per-sequence W0,
checkpoint intervals that exercise both recompute schemes, strong decay and long T. Also gradcheck,
opcheck, torch.compile, determinism across thread counts, the single-step op and bad input.
"""

import pytest
import torch
from conftest import rel_rms_err
from metakern import use_backend
from metakern.ops.synapse import (
    default_checkpoint_every,
    memory_model_bytes,
    metods_closed_form_backward,
    metods_step,
    metods_synapse,
)
from metakern.ops.synapse_reference import metods_synapse_reference, synapse_coefficients

BACKENDS = ("cpp", "reference")


def make_inputs(B, T, N, S, dtype=torch.float64, *, batched=True, reset_p=0.2, seed=0, decay=None):
    g = torch.Generator().manual_seed(seed)
    cd = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(*shape, scale=1.0, dt=cd):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dt)

    v0 = randn(B, T, N, dt=dtype)
    W0 = randn(*((B, N, N) if batched else (N, N)), scale=0.3)
    alpha = randn(N, N, scale=0.3)
    kappa = randn(S, S + 1, scale=0.6 / S**0.5)  # keeps deep inner recursions (identity, S = 5) finite
    beta = randn(S, S + 1, scale=0.6 / S**0.5)
    if decay is not None:  # strong decay: every write mostly forgets the previous matrices
        beta = beta * decay
    reset = (torch.rand(B, T, generator=g) < reset_p) if reset_p else None
    return [v0, W0, alpha, kappa, beta], reset


def grads_of(fn, inputs, reset, seed=1, **kw):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    vS, WT = fn(*inputs, reset, **kw)
    g = torch.Generator().manual_seed(seed)
    gv = torch.randn(vS.shape, generator=g, dtype=torch.float64).to(vS.dtype)
    gw = torch.randn(WT.shape, generator=g, dtype=torch.float64).to(WT.dtype)
    grads = torch.autograd.grad((vS, WT), inputs, (gv, gw))
    return (vS.detach(), WT.detach()), grads


def naive(v0, W0, alpha, kappa, beta, reset, activation="tanh", **_):
    return metods_synapse_reference(v0, W0, alpha, kappa, beta, reset, activation)


def fused(backend):
    def run(*args, **kw):
        with use_backend(backend):
            return metods_synapse(*args, **kw)

    return run


NAMES = ("vS", "WT", "dv0", "dW0", "dalpha", "dkappa", "dbeta")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "B,T,N,S,batched,C",
    [
        (1, 1, 1, 1, False, None),
        (3, 7, 5, 2, True, None),
        (2, 13, 7, 3, False, 2),
        (4, 9, 6, 1, True, 3),
        (2, 6, 3, 4, False, 1),
        (2, 5, 4, 5, True, None),  # S = 5: the run-time-S kernel
        (2, 70, 5, 2, False, 70),  # a segment over 64 steps: the nested sqrt recompute
    ],
)
@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_matches_naive_float64(backend, B, T, N, S, batched, C, activation):
    inputs, reset = make_inputs(B, T, N, S, batched=batched, seed=B * 100 + T + N + S)
    (ref, gref) = grads_of(naive, inputs, reset, activation=activation)
    (out, g) = grads_of(fused(backend), inputs, reset, activation=activation, checkpoint_every=C)
    for name, a, e in zip(NAMES, out + g, ref + gref, strict=True):
        assert a.shape == e.shape, name
        assert torch.isfinite(e).all(), name
        scale = max(1.0, e.abs().max().item())
        assert (a - e).abs().max().item() <= 1e-10 * scale, name


@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("case", ["plain", "strong-decay", "long-T"])
def test_float32_against_float64_naive(S, case):
    """fp32 fused vs the fp64 naive loop on the same (rounded) inputs: relative RMS error, including
    the regimes where fused gate gradients are known to go wrong (strong decay, long sequences)."""
    T = 300 if case == "long-T" else 40
    decay = 0.15 if case == "strong-decay" else None
    inputs32, reset = make_inputs(3, T, 16, S, torch.float32, seed=S, decay=decay)
    inputs64 = [t.double() for t in inputs32]
    ref, gref = grads_of(naive, inputs64, reset)
    out, g = grads_of(fused("cpp"), inputs32, reset)
    for name, a, e in zip(NAMES, out + g, ref + gref, strict=True):
        assert rel_rms_err(a, e) < 2e-5, f"{name}: rel RMS {rel_rms_err(a, e):.2e}"


def test_bfloat16_inputs_keep_float32_state():
    inputs, reset = make_inputs(2, 11, 8, 2, torch.float32, seed=3)
    v16 = inputs[0].to(torch.bfloat16)
    vS, WT = metods_synapse(v16, *inputs[1:], reset)
    assert vS.dtype == torch.bfloat16 and WT.dtype == torch.float32
    ref_v, ref_w = metods_synapse_reference(v16.double(), *[t.double() for t in inputs[1:]], reset)
    assert rel_rms_err(vS, ref_v) < 1e-2
    assert rel_rms_err(WT, ref_w) < 1e-5
    x = v16.clone().requires_grad_()
    metods_synapse(x, *inputs[1:], reset)[0].float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("C", [1, 2, 5, 16, 33, None])
def test_checkpoint_interval_does_not_change_results(C):
    inputs, reset = make_inputs(3, 33, 6, 2, seed=11)
    base_out, base_g = grads_of(fused("cpp"), inputs, reset, checkpoint_every=33)
    out, g = grads_of(fused("cpp"), inputs, reset, checkpoint_every=C)
    for name, a, e in zip(NAMES, out + g, base_out + base_g, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12, msg=name)


def test_closed_form_backward_reference_matches_autograd():
    inputs, reset = make_inputs(2, 6, 4, 3, seed=5)
    v0, W0, alpha, kappa, beta = inputs
    gamma, coef = synapse_coefficients(beta)
    gv = torch.randn(2, 6, 4, dtype=torch.float64)
    gw = torch.randn(2, 4, 4, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (v0, W0, alpha, kappa, gamma, coef)]
    from metakern.ops.synapse import metods_closed_form

    vS, WT, _ = metods_closed_form(*leaves, reset, "tanh")
    expected = torch.autograd.grad((vS, WT), leaves, (gv, gw))
    got = metods_closed_form_backward(gv, gw, v0, W0, alpha, kappa, gamma, coef, reset, "tanh")
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batched", [True, False])
def test_gradcheck(backend, batched):
    inputs, reset = make_inputs(2, 5, 3, 2, batched=batched, seed=7)
    inputs = [t.requires_grad_() for t in inputs]

    def f(*args):
        with use_backend(backend):
            return metods_synapse(*args, reset, checkpoint_every=2)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_backward_is_once_differentiable():
    inputs, reset = make_inputs(2, 4, 3, 2, seed=8)
    inputs = [t.requires_grad_() for t in inputs]
    vS, _ = metods_synapse(*inputs, reset)
    (g,) = torch.autograd.grad(vS.square().sum(), inputs[2], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        g.sum().backward()


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("with_reset", [False, True])
def test_opcheck(requires_grad, with_reset):
    inputs, reset = make_inputs(2, 6, 4, 2, reset_p=0.3 if with_reset else 0, seed=9)
    v0, W0, alpha, kappa, beta = inputs
    gamma, coef = synapse_coefficients(beta)
    args = [v0, W0, alpha, kappa, gamma, coef]
    for t in args:
        t.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.metakern.metods_synapse.default, (*args, reset, 0, 2, requires_grad))


def test_backward_opcheck():
    inputs, reset = make_inputs(2, 6, 4, 2, seed=10)
    v0, W0, alpha, kappa, beta = inputs
    gamma, coef = synapse_coefficients(beta)
    _, _, vs, ps, ckpt = torch.ops.metakern.metods_synapse(v0, W0, alpha, kappa, gamma, coef, reset, 0, 2, True)
    gv, gw = torch.randn_like(v0), torch.randn(2, 4, 4, dtype=torch.float64)
    args = (gv, gw, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, 0, 2)
    torch.library.opcheck(torch.ops.metakern.metods_synapse_backward.default, args)


def test_compile_fullgraph():
    inputs, reset = make_inputs(2, 6, 4, 2, seed=12)

    def loss(v0, W0, alpha, kappa, beta):
        vS, WT = metods_synapse(v0, W0, alpha, kappa, beta, reset)
        return vS.square().mean() + WT.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    leaves = [t.clone().requires_grad_() for t in inputs]
    leaves_c = [t.clone().requires_grad_() for t in inputs]
    loss(*leaves).backward()
    compiled(*leaves_c).backward()
    for a, b in zip(leaves_c, leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_shared_gradients_do_not_depend_on_thread_count():
    inputs, reset = make_inputs(70, 9, 8, 2, torch.float32, batched=False, seed=13)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(grads_of(fused("cpp"), inputs, reset))
    finally:
        torch.set_num_threads(threads)
    for out, g in results[1:]:
        for a, e in zip(out + g, results[0][0] + results[0][1], strict=True):
            assert torch.equal(a, e)


def test_step_matches_sequence():
    inputs, _ = make_inputs(3, 6, 5, 2, torch.float32, seed=14, reset_p=0)
    v0, W0, alpha, kappa, beta = inputs
    vS, WT = metods_synapse(v0, W0, alpha, kappa, beta)
    W = W0.clone()
    for t in range(6):
        v, W = metods_step(v0[:, t].contiguous(), W, alpha, kappa, beta)
        torch.testing.assert_close(v, vS[:, t], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(W, WT, rtol=1e-6, atol=1e-6)


def test_step_is_differentiable_through_the_carried_state():
    inputs, _ = make_inputs(2, 3, 4, 2, seed=15, reset_p=0)
    leaves = [t.clone().requires_grad_() for t in inputs]
    v0, W0, alpha, kappa, beta = leaves
    W = W0
    loss = 0
    for t in range(3):
        v, W = metods_step(v0[:, t].contiguous(), W, alpha, kappa, beta)
        loss = loss + v.square().sum()
    grads = torch.autograd.grad(loss, leaves)
    ref_leaves = [t.clone().requires_grad_() for t in inputs]
    vS, _ = metods_synapse_reference(*ref_leaves)
    expected = torch.autograd.grad(vS.square().sum(), ref_leaves)
    for a, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_unused_coefficients_get_zero_gradient():
    inputs, reset = make_inputs(2, 5, 4, 3, seed=16)
    _, g = grads_of(fused("cpp"), inputs, reset)
    dkappa, dbeta = g[3], g[4]
    upper = torch.triu(torch.ones(3, 4, dtype=torch.bool), diagonal=2)  # columns l > s
    assert (dkappa[upper] == 0).all() and (dbeta[upper] == 0).all()


def test_memory_model_and_default_interval():
    assert default_checkpoint_every(64, 2, 200) == 16
    assert default_checkpoint_every(64, 2, 5) == 5
    saved = memory_model_bytes(64, 200, 64, 2)
    vectors = 2 * 64 * 200 * 2 * 64 * 4
    assert vectors < saved < 3 * vectors  # checkpoints cost about what the vectors cost


# --------------------------------------------------------------------------------------------------
# Bad input


def _good():
    inputs, reset = make_inputs(2, 4, 3, 2, torch.float32, seed=0)
    return inputs, reset


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: a.__setitem__(0, a[0][0]), ValueError, "v0: expected a 3-D tensor"),
        (lambda a: a.__setitem__(0, a[0].long()), TypeError, "v0: expected a floating tensor"),
        (lambda a: a.__setitem__(1, a[1].double()), TypeError, "W0: expected dtype torch.float32"),
        (lambda a: a.__setitem__(1, a[1][:, :2].contiguous()), ValueError, "W0: expected shape"),
        (lambda a: a.__setitem__(2, a[2][:2].contiguous()), ValueError, "alpha: expected shape"),
        (lambda a: a.__setitem__(3, a[3][:, :2].contiguous()), ValueError, "kappa: expected shape"),
        (lambda a: a.__setitem__(3, torch.zeros(17, 18)), ValueError, "kappa: expected shape"),
        (lambda a: a.__setitem__(4, a[4][:1]), ValueError, "beta: expected shape"),
        (lambda a: a.__setitem__(0, a[0].transpose(1, 2).contiguous().transpose(1, 2)), ValueError, "contiguous"),
        (lambda a: a.__setitem__(0, a[0][:, :0]), ValueError, "non-empty"),
    ],
)
def test_bad_tensors(mutate, exc, match):
    inputs, _ = _good()
    mutate(inputs)
    with pytest.raises(exc, match=match):
        metods_synapse(*inputs)


def test_bad_options():
    inputs, reset = _good()
    with pytest.raises(ValueError, match="activation"):
        metods_synapse(*inputs, activation="sigmoid")
    with pytest.raises(ValueError, match="checkpoint_every"):
        metods_synapse(*inputs, checkpoint_every=0)
    with pytest.raises(ValueError, match="reset: expected shape"):
        metods_synapse(*inputs, reset[:, :2])
    with pytest.raises(TypeError, match="reset: expected a bool or integer"):
        metods_synapse(*inputs, reset.float())
    with pytest.raises(ValueError, match="0/1 flags"):
        metods_synapse(*inputs, reset.long() * 2)
    with pytest.raises(ValueError, match="v: expected a 2-D tensor"):
        metods_step(inputs[0], inputs[1], *inputs[2:])
