"""metakern.policy: tabular and linear-softmax log-prob ops. Every backend against autograd through
log_softmax + gather (float64, 1e-10) for the value, the gradient and the Hessian-vector product of
a DiCE-like objective; gradcheck, gradgradcheck and third order; opcheck; deterministic reductions;
bad inputs."""

import metakern
import pytest
import torch
from conftest import CPU_BACKENDS, backend_param
from metakern.policy import (
    linear_softmax_log_prob,
    linear_softmax_log_prob_reference,
    tabular_log_prob,
    tabular_log_prob_reference,
)

ops = torch.ops.metakern
F64 = torch.float64
BACKENDS = [backend_param(b) for b in CPU_BACKENDS]
CPP = [backend_param("cpp")]

# (N or None for a single policy, S, A, B, T, index dtype); the Triton interpreter gets the small ones.
TAB_CASES = [
    (None, 1, 1, 1, 1, torch.int64),
    (None, 5, 3, 4, 7, torch.int32),
    (None, 20, 5, 6, 33, torch.int64),
    (3, 4, 6, 2, 5, torch.int64),
    (2, 7, 2, 3, 4, torch.int32),
]
# (N or None, F, A, B, T, index dtype)
LIN_CASES = [
    (None, 1, 1, 1, 1, torch.int64),
    (None, 3, 4, 4, 7, torch.int32),
    (None, 9, 5, 5, 21, torch.int64),
    (3, 4, 3, 2, 5, torch.int64),
    (2, 2, 6, 3, 4, torch.int32),
]


def case_id(case):
    n, p, a, b, t, idx = case
    return f"N{n}-{p}x{a}-B{b}-T{t}-{str(idx).removeprefix('torch.')}"


def gen(seed):
    return torch.Generator().manual_seed(seed)


def tab_inputs(case, seed, dtype=F64):
    N, S, A, B, T, idx = case
    g = gen(seed)
    lead = () if N is None else (N,)
    theta = (2 * torch.randn(*lead, S, A, generator=g, dtype=F64)).to(dtype)
    states = torch.randint(0, S, (*lead, B, T), generator=g).to(idx)
    actions = torch.randint(0, A, (*lead, B, T), generator=g).to(idx)
    v = torch.randn(*lead, S, A, generator=g, dtype=F64).to(dtype)
    return theta, states, actions, v


def lin_inputs(case, seed, dtype=F64):
    N, F, A, B, T, idx = case
    g = gen(seed)
    lead = () if N is None else (N,)
    weight = torch.randn(*lead, F, A, generator=g, dtype=F64).to(dtype)
    features = torch.randn(*lead, B, T, F, generator=g, dtype=F64).to(dtype)
    actions = torch.randint(0, A, (*lead, B, T), generator=g).to(idx)
    vw = torch.randn(*lead, F, A, generator=g, dtype=F64).to(dtype)
    vx = torch.randn(*lead, B, T, F, generator=g, dtype=F64).to(dtype)
    return weight, features, actions, vw, vx


def objective(l):
    """DiCE-like: sum_t box(c_t) w_t with c the cumulative log-prob, plus a quadratic term, so that
    both the l-gradient and the l-Hessian are dense and nonzero."""
    T = l.shape[-1]
    w = torch.linspace(-1.0, 2.0, T, dtype=l.dtype)
    c = l.cumsum(-1)
    return (torch.exp(c - c.detach()) * w).sum() + 0.3 * (l * l).sum()


def value_grad_hvp(fn, params, fixed, vs):
    """l, dJ/dparams and the HVP along vs, with create_graph on the first derivative."""
    params = [p.detach().clone().requires_grad_() for p in params]
    l = fn(*params, *fixed)
    grads = torch.autograd.grad(objective(l), params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vs, strict=True))
    hvp = torch.autograd.grad(dot, params)
    return (l.detach(), *(g.detach() for g in grads), *hvp)


def assert_all_close(got, want, atol=1e-10, rtol=1e-10):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol)


# --------------------------------------------------------------------------------------------
# Value, gradient and HVP against autograd through log_softmax + gather
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", TAB_CASES, ids=case_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_tabular_matches_autograd(backend, case):
    theta, states, actions, v = tab_inputs(case, seed=sum(case[1:5]))
    want = value_grad_hvp(tabular_log_prob_reference, [theta], [states, actions], [v])
    with metakern.use_backend(backend):
        got = value_grad_hvp(tabular_log_prob, [theta], [states, actions], [v])
    assert got[0].shape == states.shape and got[0].dtype == F64
    assert_all_close(got, want)
    assert case[2] == 1 or got[2].abs().sum() > 0  # a nonzero HVP (A = 1: l is constant)


@pytest.mark.parametrize("case", LIN_CASES, ids=case_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_matches_autograd(backend, case):
    weight, features, actions, vw, vx = lin_inputs(case, seed=sum(case[1:5]))
    fixed = [actions]
    want = value_grad_hvp(linear_softmax_log_prob_reference, [weight, features], fixed, [vw, vx])
    with metakern.use_backend(backend):
        got = value_grad_hvp(linear_softmax_log_prob, [weight, features], fixed, [vw, vx])
        # one parameter at a time: the other's gradient is neither computed nor needed
        got_w = value_grad_hvp(lambda w, a: linear_softmax_log_prob(w, features, a), [weight], fixed, [vw])
        got_x = value_grad_hvp(lambda x, a: linear_softmax_log_prob(weight, x, a), [features], fixed, [vx])
    ref_w = value_grad_hvp(lambda w, a: linear_softmax_log_prob_reference(w, features, a), [weight], fixed, [vw])
    ref_x = value_grad_hvp(lambda x, a: linear_softmax_log_prob_reference(weight, x, a), [features], fixed, [vx])
    assert got[0].shape == actions.shape
    assert_all_close(got, want)
    assert_all_close(got_w, ref_w)
    assert_all_close(got_x, ref_x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32(backend):
    theta, states, actions, v = tab_inputs((None, 6, 4, 3, 9, torch.int64), seed=1)
    weight, features, lin_actions, vw, vx = lin_inputs((None, 5, 4, 3, 9, torch.int64), seed=2)
    want_t = value_grad_hvp(tabular_log_prob_reference, [theta], [states, actions], [v])
    want_l = value_grad_hvp(linear_softmax_log_prob_reference, [weight, features], [lin_actions], [vw, vx])
    with metakern.use_backend(backend):
        got_t = value_grad_hvp(tabular_log_prob, [theta.float()], [states, actions], [v.float()])
        got_l = value_grad_hvp(
            linear_softmax_log_prob, [weight.float(), features.float()], [lin_actions], [vw.float(), vx.float()]
        )
    assert all(t.dtype == torch.float32 for t in got_t + got_l)
    assert_all_close([t.double() for t in got_t], want_t, atol=2e-5, rtol=2e-5)
    assert_all_close([t.double() for t in got_l], want_l, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_logits(backend):
    """Saturated softmaxes (logit gaps of hundreds, probabilities below 1e-300) and masked (-inf)
    tabular actions stay finite and match the reference."""
    theta, states, actions, v = tab_inputs((None, 6, 4, 3, 9, torch.int64), seed=29)
    theta = 300 * theta
    theta[0, 1] = -torch.inf
    actions[states == 0] = 0  # never take the masked action
    weight, features, lin_actions, vw, vx = lin_inputs((None, 5, 4, 3, 9, torch.int64), seed=30)
    weight = 100 * weight
    want_t = value_grad_hvp(tabular_log_prob_reference, [theta], [states, actions], [v])
    want_l = value_grad_hvp(linear_softmax_log_prob_reference, [weight, features], [lin_actions], [vw, vx])
    with metakern.use_backend(backend):
        got_t = value_grad_hvp(tabular_log_prob, [theta], [states, actions], [v])
        got_l = value_grad_hvp(linear_softmax_log_prob, [weight, features], [lin_actions], [vw, vx])
    assert all(torch.isfinite(t).all() for t in got_t[1:] + got_l)
    assert_all_close(got_t + got_l, want_t + want_l)


@pytest.mark.parametrize("backend", CPP)
def test_cpp_many_chunks_and_deterministic(backend):
    """Sizes that cut each task into several chunks; results do not depend on the thread count."""
    tab = tab_inputs((2, 13, 5, 64, 300, torch.int64), seed=3)  # 19200 steps per task: 2 chunks
    lin = lin_inputs((None, 8, 4, 20, 100, torch.int32), seed=4)  # 512 steps per chunk: 4 chunks
    threads = torch.get_num_threads()
    runs = []
    for nt in (1, 2, 3):
        torch.set_num_threads(nt)
        try:
            with metakern.use_backend(backend):
                t = value_grad_hvp(tabular_log_prob, [tab[0]], [tab[1], tab[2]], [tab[3]])
                li = value_grad_hvp(linear_softmax_log_prob, [lin[0], lin[1]], [lin[2]], [lin[3], lin[4]])
        finally:
            torch.set_num_threads(threads)
        runs.append(t + li)
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True))
    want_t = value_grad_hvp(tabular_log_prob_reference, [tab[0]], [tab[1], tab[2]], [tab[3]])
    want_l = value_grad_hvp(linear_softmax_log_prob_reference, [lin[0], lin[1]], [lin[2]], [lin[3], lin[4]])
    assert_all_close(runs[0], want_t + want_l)


def test_no_grad_and_views():
    """Without autograd the public functions call the kernels directly; views and mixed index
    dtypes are made contiguous / converted."""
    theta, states, actions, _ = tab_inputs((None, 6, 4, 5, 8, torch.int64), seed=5)
    want = tabular_log_prob_reference(theta, states, actions)
    with torch.no_grad():
        torch.testing.assert_close(tabular_log_prob(theta, states, actions.int()), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(tabular_log_prob(theta.t().contiguous().t(), states, actions), want)
    weight, features, actions, _, _ = lin_inputs((None, 4, 3, 5, 8, torch.int64), seed=6)
    feats_t = features.transpose(0, 1).contiguous().transpose(0, 1)
    torch.testing.assert_close(
        linear_softmax_log_prob(weight, feats_t, actions), linear_softmax_log_prob_reference(weight, features, actions)
    )


# --------------------------------------------------------------------------------------------
# gradcheck, gradgradcheck, third order
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_gradgradcheck(backend):
    theta, states, actions, _ = tab_inputs((None, 3, 3, 2, 3, torch.int64), seed=7)
    theta_n, states_n, actions_n, _ = tab_inputs((2, 2, 3, 1, 3, torch.int32), seed=8)
    weight, features, lin_actions, _, _ = lin_inputs((None, 2, 3, 1, 3, torch.int64), seed=9)
    with metakern.use_backend(backend):
        for fn, args in (
            (lambda th: tabular_log_prob(th, states, actions), (theta,)),
            (lambda th: tabular_log_prob(th, states_n, actions_n), (theta_n,)),
            (lambda w, x: linear_softmax_log_prob(w, x, lin_actions), (weight, features)),
        ):
            args = tuple(a.requires_grad_() for a in args)
            assert torch.autograd.gradcheck(fn, args)
            assert torch.autograd.gradgradcheck(fn, args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_ops_gradcheck(backend):
    """gradcheck of a backward op checks the fused double backward; gradgradcheck, which
    differentiates it again, the differentiable (create_graph) path: the third order."""
    theta, states, actions, _ = tab_inputs((None, 3, 3, 2, 3, torch.int64), seed=10)
    gl = torch.randn(states.shape, generator=gen(11), dtype=F64)
    weight, features, lin_actions, _, _ = lin_inputs((None, 2, 3, 1, 3, torch.int64), seed=12)
    gl_lin = torch.randn(lin_actions.shape, generator=gen(13), dtype=F64)
    with metakern.use_backend(backend):
        for fn, args in (
            (lambda g, th: ops.tabular_log_prob_backward(g, th, states, actions), (gl, theta)),
            (
                lambda g, w, x: ops.linear_softmax_log_prob_backward(g, w, x, lin_actions, True, True),
                (gl_lin, weight, features),
            ),
        ):
            args = tuple(a.requires_grad_() for a in args)
            assert torch.autograd.gradcheck(fn, args)
            if backend != "triton":  # the create_graph path is torch ops on every backend: once is enough
                assert torch.autograd.gradgradcheck(fn, args)


def third_order(fn, params, fixed, vs, v2s):
    """d/dparams <HVP(params; vs), v2s>: a third derivative of the objective."""
    params = [p.detach().clone().requires_grad_() for p in params]
    grads = torch.autograd.grad(objective(fn(*params, *fixed)), params, create_graph=True)
    hvp = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs, strict=True)), params, create_graph=True)
    return torch.autograd.grad(sum((h * v).sum() for h, v in zip(hvp, v2s, strict=True)), params)


@pytest.mark.parametrize("backend", [backend_param("cpp"), backend_param("reference")])
def test_third_order_matches_autograd(backend):
    theta, states, actions, v = tab_inputs((None, 5, 4, 3, 6, torch.int64), seed=14)
    v2 = torch.randn(theta.shape, generator=gen(15), dtype=F64)
    weight, features, lin_actions, vw, vx = lin_inputs((2, 3, 4, 2, 5, torch.int32), seed=16)
    v2w, v2x = torch.randn_like(vw), torch.randn_like(vx)
    want_t = third_order(tabular_log_prob_reference, [theta], [states, actions], [v], [v2])
    want_l = third_order(linear_softmax_log_prob_reference, [weight, features], [lin_actions], [vw, vx], [v2w, v2x])
    with metakern.use_backend(backend):
        got_t = third_order(tabular_log_prob, [theta], [states, actions], [v], [v2])
        got_l = third_order(linear_softmax_log_prob, [weight, features], [lin_actions], [vw, vx], [v2w, v2x])
    assert_all_close(got_t + got_l, want_t + want_l)


def test_fused_second_order_op_refuses_to_be_differentiated():
    theta, states, actions, v = tab_inputs((None, 3, 2, 2, 3, torch.int64), seed=17)
    gl = torch.randn(states.shape, dtype=F64, requires_grad=True)
    u, _ = ops.tabular_log_prob_double_backward(gl, theta, states, actions, v, True, True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        u.sum().backward()
    weight, features, lin_actions, vw, vx = lin_inputs((None, 2, 3, 2, 3, torch.int64), seed=18)
    weight.requires_grad_()
    _, dw, _ = ops.linear_softmax_log_prob_double_backward(
        gl.detach(), weight, features, lin_actions, vw, vx, True, True, True
    )
    with pytest.raises(RuntimeError, match="not differentiable"):
        dw.sum().backward()


# --------------------------------------------------------------------------------------------
# torch.library
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_opcheck(dtype, requires_grad):
    theta, states, actions, v = tab_inputs((2, 4, 3, 2, 5, torch.int64), seed=19, dtype=dtype)
    gl = torch.randn(states.shape, generator=gen(20), dtype=F64).to(dtype)
    weight, features, lin_actions, vw, vx = lin_inputs((None, 3, 4, 2, 5, torch.int32), seed=21, dtype=dtype)
    gl_lin = torch.randn(lin_actions.shape, generator=gen(22), dtype=F64).to(dtype)
    for t in (theta, gl, weight, features, gl_lin):
        t.requires_grad_(requires_grad)
    torch.library.opcheck(ops.tabular_log_prob.default, (theta, states, actions))
    torch.library.opcheck(ops.tabular_log_prob_backward.default, (gl, theta, states, actions))
    torch.library.opcheck(ops.linear_softmax_log_prob.default, (weight, features, lin_actions))
    for need_w, need_x in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(
            ops.linear_softmax_log_prob_backward.default, (gl_lin, weight, features, lin_actions, need_w, need_x)
        )
    # the fused second-order kernels are not differentiable: checked without autograd
    gl, theta, weight, features, gl_lin = (t.detach() for t in (gl, theta, weight, features, gl_lin))
    torch.library.opcheck(ops.tabular_log_prob_double_backward.default, (gl, theta, states, actions, v, True, False))
    for cot in ((vw, vx), (None, vx), (vw, None)):
        torch.library.opcheck(
            ops.linear_softmax_log_prob_double_backward.default,
            (gl_lin, weight, features, lin_actions, *cot, True, True, True),
        )


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_indices(backend):
    theta, states, actions, v = tab_inputs((None, 4, 3, 2, 5, torch.int64), seed=22)
    weight, features, lin_actions, _, _ = lin_inputs((None, 2, 3, 2, 5, torch.int64), seed=23)
    gl = torch.randn(states.shape, dtype=F64)
    bad_s, bad_a, neg_a = states.clone(), actions.clone(), lin_actions.clone()
    bad_s[1, 3] = 4
    bad_a[0, 2] = -1
    neg_a[1, 4] = 3
    with metakern.use_backend(backend):
        with pytest.raises(ValueError, match=r"states: .*4.* out of range|states: expected indices in \[0, 4\)"):
            tabular_log_prob(theta, bad_s, actions)
        with pytest.raises(ValueError, match=r"actions: .*-1.*out of range|actions: expected indices in \[0, 3\)"):
            tabular_log_prob(theta, states, bad_a)
        with pytest.raises(ValueError, match="states"):
            ops.tabular_log_prob_backward(gl, theta, bad_s, actions)
        with pytest.raises(ValueError, match="actions"):
            ops.tabular_log_prob_double_backward(gl, theta, states, bad_a, v, True, True)
        with pytest.raises(ValueError, match=r"actions: .*3.*out of range|actions: expected indices in \[0, 3\)"):
            linear_softmax_log_prob(weight, features, neg_a)
        with pytest.raises(ValueError, match="actions"):
            ops.linear_softmax_log_prob_backward(gl, weight, features, neg_a, True, True)


def test_cpp_names_the_bad_step():
    theta, states, actions, _ = tab_inputs((2, 4, 3, 2, 5, torch.int64), seed=24)
    states[1, 0, 3] = 9
    with metakern.use_backend("cpp"), pytest.raises(ValueError, match=r"states: index 9 at position \(1, 0, 3\)"):
        tabular_log_prob(theta, states, actions)


def test_bad_inputs():
    theta, states, actions, v = tab_inputs((None, 4, 3, 2, 5, torch.int64), seed=25)
    weight, features, lin_actions, _, _ = lin_inputs((None, 2, 3, 2, 5, torch.int64), seed=26)
    with pytest.raises(TypeError, match="theta: expected a floating tensor"):
        tabular_log_prob(theta.half(), states, actions)
    with pytest.raises(TypeError, match="theta: expected a floating tensor"):
        tabular_log_prob(states, states, actions)
    with pytest.raises(TypeError, match="states: expected an integer index tensor"):
        tabular_log_prob(theta, states.double(), actions)
    with pytest.raises(TypeError, match=r"actions: expected dtype torch.int64"):
        ops.tabular_log_prob(theta, states, actions.int())
    with pytest.raises(TypeError, match=r"theta: expected a torch.Tensor"):
        tabular_log_prob([[0.0]], states, actions)
    with pytest.raises(ValueError, match="theta: expected a tensor of shape"):
        tabular_log_prob(theta[0], states, actions)
    with pytest.raises(ValueError, match="states: expected a 2-D tensor"):
        tabular_log_prob(theta, states[0], actions)
    with pytest.raises(ValueError, match="actions: expected shape"):
        tabular_log_prob(theta, states, actions[:, :3])
    with pytest.raises(ValueError, match="states: expected 3 tasks"):
        tabular_log_prob(theta.expand(3, 4, 3), states.expand(2, 2, 5), actions.expand(2, 2, 5))
    with pytest.raises(ValueError, match="non-empty"):
        tabular_log_prob(theta, states[:, :0], actions[:, :0])
    with pytest.raises(ValueError, match="states: expected a tensor on meta"):
        ops.tabular_log_prob(theta.to("meta"), states, actions)
    with pytest.raises(ValueError, match="contiguous"):
        ops.tabular_log_prob(theta.t(), states, actions)
    with pytest.raises(TypeError, match=r"gl: expected dtype torch.float64"):
        ops.tabular_log_prob_backward(torch.ones(2, 5), theta, states, actions)
    with pytest.raises(ValueError, match="v: expected shape"):
        ops.tabular_log_prob_double_backward(torch.ones(2, 5, dtype=F64), theta, states, actions, v[:2], True, True)
    with pytest.raises(TypeError, match=r"features: expected dtype torch.float64"):
        linear_softmax_log_prob(weight, features.float(), lin_actions)
    with pytest.raises(ValueError, match="features: expected shape"):
        linear_softmax_log_prob(weight, features[..., :1], lin_actions)
    with pytest.raises(ValueError, match="features: expected a tensor of shape"):
        linear_softmax_log_prob(weight, features[0], lin_actions)
    with pytest.raises(ValueError, match="actions: expected shape"):
        linear_softmax_log_prob(weight, features, lin_actions[:1])
    with pytest.raises(ValueError, match="features: expected a tensor on meta"):
        linear_softmax_log_prob(weight.to("meta"), features, lin_actions)
    with pytest.raises(RuntimeError, match="forced backend 'cuda' cannot run"):
        with metakern.use_backend("cuda"):
            tabular_log_prob(theta, states, actions)


def test_fake_tensors_shapes():
    """The meta kernels give the output shapes without data."""
    theta, states, actions, _ = (t.to("meta") for t in tab_inputs((2, 4, 3, 2, 5, torch.int64), seed=27))
    assert ops.tabular_log_prob(theta, states, actions).shape == (2, 2, 5)
    weight, features, lin_actions, _, _ = (t.to("meta") for t in lin_inputs((None, 2, 3, 2, 5, torch.int64), seed=28))
    gw, gx = ops.linear_softmax_log_prob_backward(
        torch.empty(2, 5, device="meta", dtype=F64), weight, features, lin_actions, True, False
    )
    assert gw.shape == weight.shape and gx.numel() == 0
