"""Softmax-policy log-probabilities with closed-form first and second derivatives.

``metakern::tabular_log_prob(theta, states, actions)``: l_t = log_softmax(theta)[s_t, a_t]
``metakern::linear_softmax_log_prob(weight, features, actions)``: l_t = log_softmax(phi_t @ W)[a_t]

Each is a ``torch.library`` op whose backward is another op (the VJP) whose own backward is a
third (the VJP of the VJP), so that a Hessian-vector product of any objective J(l) in parameter
space costs O(B*T*A) (tabular) or O(B*T*F*A) (linear) with no autograd tape through a
[B, T, A] log_softmax. With pi_t the policy at step t and d_t = e_{a_t} - pi_t:

  forward          l_t
  backward         tabular  grad_theta = sum_t gl_t e_{s_t} d_t^T        (a scatter-add per (s, a))
                   linear   grad_W = sum_t gl_t phi_t d_t^T,   grad_phi_t = gl_t W d_t
  double backward  given cotangents V of the backward's outputs, y_t = the change of step t's
                   logits along V (tabular V[s_t]; linear phi_t V_W + V_phi_t W):
                     d gl_t = u_t = y_t[a_t] - <pi_t, y_t>               (the JVP of l along V)
                     q_t = -gl_t (diag pi_t - pi_t pi_t^T) y_t           (second-order term)
                     tabular  d theta = sum_t e_{s_t} q_t^T
                     linear   d W = sum_t phi_t q_t^T + V_phi_t (gl_t d_t)^T,
                              d phi_t = W q_t + V_W (gl_t d_t)

Third and higher orders: when the second backward runs with ``create_graph=True`` (grad mode on
inside it), the double backward is computed by the same formulas written as differentiable torch
ops, so autograd carries on exactly; otherwise a fused kernel runs, whose op refuses to be
differentiated (a clear error, never a silently dropped term).

Backends (``metakern._backend``): ``cpp`` (CPU, float32/float64, OpenMP, deterministic
reductions: per-chunk bins summed in a fixed order), ``triton`` (CUDA; CPU under
TRITON_INTERPRET=1, for tests) and ``reference`` (plain torch: log_softmax + gather, and the
closed forms above with scatter_add / bmm). The tests check every backend against autograd
through ``policy_reference`` (log_softmax + gather). The CUDA module has no kernel for these ops: on CUDA tensors
the default is Triton, and forcing ``use_backend("cuda")`` raises.
"""

from __future__ import annotations

import torch

from .. import _backend, _validate
from .policy_reference import linear_softmax_log_prob_reference, tabular_log_prob_reference
from .scan import direct_call_ok

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
_INDEX_CODES = {torch.int32: 0, torch.int64: 1}
FLOAT_DTYPES = (torch.float32, torch.float64)
INDEX_DTYPES = (torch.int64, torch.int32)
_PREFERENCE = {"cpu": ("cpp",), "cuda": ("triton",)}


def _select(op: str, device_type: str) -> str:
    backend = _backend.select(op, device_type, _PREFERENCE.get(device_type, ()))
    if backend == "cuda":
        raise RuntimeError(
            f"metakern: the CUDA module has no {op} kernel; on CUDA tensors use the 'triton' backend (the default) "
            "or 'reference'"
        )
    return backend


# --------------------------------------------------------------------------------------------------
# Validation


def _index_tensor(name: str, t: object, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name}: expected an integer index tensor (torch.int64 or torch.int32), got {t.dtype}")
    return _validate.tensor(name, t, ndim=ndim, layout=layout, dtypes=None)


def _float_tensor(name: str, t: object, ndims: tuple[int, ...], layout: str) -> torch.Tensor:
    _validate.tensor(name, t, layout=layout, dtypes=FLOAT_DTYPES)
    if t.dim() not in ndims:
        raise ValueError(f"{name}: expected a tensor of shape {layout}, got shape {tuple(t.shape)}")
    return t


def _check_indices(states: torch.Tensor | None, actions: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    if states is not None:
        _validate.same_device("states", states, like_name, like)
        if actions.dtype != states.dtype:
            raise TypeError(f"actions: expected dtype {states.dtype} (like states), got {actions.dtype}")
        _validate.shape("actions", actions, tuple(states.shape), "the shape of states")
    _validate.same_device("actions", actions, like_name, like)


def check_tabular_args(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> None:
    """theta [S, A] with states, actions [B, T], or theta [N, S, A] with [N, B, T]: theta float32 or
    float64, indices int64 or int32 (one dtype), all contiguous, non-empty and on one device.
    Index ranges are data and are checked where the data is read (see ``_check_ranges``)."""
    _float_tensor("theta", theta, (2, 3), "[S, A] or [N, S, A]")
    batched = theta.dim() == 3
    layout = "[N, B, T]" if batched else "[B, T]"
    _index_tensor("states", states, theta.dim(), layout)
    _index_tensor("actions", actions, theta.dim(), layout)
    _check_indices(states, actions, "theta", theta)
    if batched and states.shape[0] != theta.shape[0]:
        raise ValueError(
            f"states: expected {theta.shape[0]} tasks (N of theta [N, S, A] = {tuple(theta.shape)}), "
            f"got shape {tuple(states.shape)}"
        )


def check_linear_args(weight: torch.Tensor, features: torch.Tensor, actions: torch.Tensor) -> None:
    """weight [F, A] with features [B, T, F] and actions [B, T], or weight [N, F, A] with
    [N, B, T, F] and [N, B, T]; weight and features of one float dtype (float32/float64)."""
    _float_tensor("weight", weight, (2, 3), "[F, A] or [N, F, A]")
    batched = weight.dim() == 3
    F = weight.shape[-2]
    f_layout = "[N, B, T, F]" if batched else "[B, T, F]"
    _float_tensor("features", features, (weight.dim() + 1,), f_layout)
    _validate.same_device("features", features, "weight", weight)
    _validate.same_dtype("features", features, "weight", weight)
    if features.shape[-1] != F or (batched and features.shape[0] != weight.shape[0]):
        expected = f"N = {weight.shape[0]} and F = {F}" if batched else f"F = {F}"
        raise ValueError(
            f"features: expected shape {f_layout} with {expected} (weight is {tuple(weight.shape)}), "
            f"got {tuple(features.shape)}"
        )
    _index_tensor("actions", actions, features.dim() - 1, f_layout[:-4] + "]")
    _check_indices(None, actions, "weight", weight)
    _validate.shape("actions", actions, tuple(features.shape[:-1]), f"{f_layout[:-4]}] of features")


def _check_gl(gl: torch.Tensor, like: torch.Tensor, index: torch.Tensor) -> None:
    _validate.tensor("gl", gl, ndim=index.dim(), layout="(the shape of actions)", dtypes=FLOAT_DTYPES)
    _validate.same_device("gl", gl, "actions", index)
    _validate.same_dtype("gl", gl, "the parameters", like)
    _validate.shape("gl", gl, tuple(index.shape), "the shape of actions")


def _check_cotangent(name: str, v: torch.Tensor | None, like_name: str, like: torch.Tensor) -> None:
    if v is None:
        return
    _validate.tensor(name, v, ndim=like.dim(), layout=f"(the shape of {like_name})", dtypes=FLOAT_DTYPES)
    _validate.same_device(name, v, like_name, like)
    _validate.same_dtype(name, v, like_name, like)
    _validate.shape(name, v, tuple(like.shape), f"the shape of {like_name}")


def _position(i: int, shape: torch.Size) -> tuple[int, ...]:
    pos = []
    for size in reversed(shape):
        i, r = divmod(i, size)
        pos.append(r)
    return tuple(reversed(pos))


def _raise_bad_step(i: int, states: torch.Tensor | None, actions: torch.Tensor, S: int, A: int) -> None:
    """A kernel reported flat step i with an out-of-range index: name it."""
    pos = _position(i, actions.shape)
    if states is not None:
        s = int(states.reshape(-1)[i])
        if not 0 <= s < S:
            raise ValueError(f"states: index {s} at position {pos} is out of range [0, {S}) (S of theta)")
    a = int(actions.reshape(-1)[i])
    raise ValueError(f"actions: index {a} at position {pos} is out of range [0, {A}) (the number of actions)")


def _check_ranges(states: torch.Tensor | None, actions: torch.Tensor, S: int, A: int) -> None:
    """Index ranges, for the backends whose kernels do not check them (one min/max pass each)."""
    for name, idx, n, what in (("states", states, S, "S of theta"), ("actions", actions, A, "the number of actions")):
        if idx is None:
            continue
        lo, hi = (int(v) for v in torch.aminmax(idx))
        if lo < 0 or hi >= n:
            raise ValueError(f"{name}: expected indices in [0, {n}) ({what}), got values in [{lo}, {hi}]")


# --------------------------------------------------------------------------------------------------
# Tabular: sizes and backends


def _tab_sizes(theta: torch.Tensor, states: torch.Tensor) -> tuple[int, int, int, int]:
    """(N, M, S, A): N tasks of M steps each."""
    N = theta.shape[0] if theta.dim() == 3 else 1
    return N, states.numel() // N, theta.shape[-2], theta.shape[-1]


def _tab_views(theta, states, actions):
    N, M, S, A = _tab_sizes(theta, states)
    return theta.reshape(N, S, A), states.reshape(N, M), actions.reshape(N, M)


def _tab_fwd_cpp(theta, states, actions):
    out = torch.empty(states.shape, dtype=theta.dtype)
    N, M, S, A = _tab_sizes(theta, states)
    bad = _backend.cpp_module().tabular_log_prob(
        _DTYPE_CODES[theta.dtype], _INDEX_CODES[states.dtype], theta.data_ptr(), states.data_ptr(),
        actions.data_ptr(), out.data_ptr(), N, M, S, A, torch.get_num_threads(),
    )  # fmt: skip
    if bad >= 0:
        _raise_bad_step(bad, states, actions, S, A)
    return out


def _tab_fwd_reference(theta, states, actions):
    _check_ranges(states, actions, theta.shape[-2], theta.shape[-1])
    return tabular_log_prob_reference(theta, states, actions)


def _tab_fwd_triton(theta, states, actions):
    from metakern.kernels.policy import tabular_log_prob_triton

    _check_ranges(states, actions, theta.shape[-2], theta.shape[-1])
    return tabular_log_prob_triton(*_tab_views(theta, states, actions)).reshape(states.shape)


def _tab_bwd_cpp(gl, theta, states, actions):
    grad = torch.empty_like(theta)
    N, M, S, A = _tab_sizes(theta, states)
    bad = _backend.cpp_module().tabular_log_prob_backward(
        _DTYPE_CODES[theta.dtype], _INDEX_CODES[states.dtype], gl.data_ptr(), theta.data_ptr(), states.data_ptr(),
        actions.data_ptr(), grad.data_ptr(), N, M, S, A, torch.get_num_threads(),
    )  # fmt: skip
    if bad >= 0:
        _raise_bad_step(bad, states, actions, S, A)
    return grad


def _tab_bwd_reference(gl, theta, states, actions):
    _check_ranges(states, actions, theta.shape[-2], theta.shape[-1])
    N, M, S, A = _tab_sizes(theta, states)
    theta3, s2, a2 = _tab_views(theta, states, actions)
    flat = s2.long() * A + a2.long()
    at = gl.new_zeros(N, S * A).scatter_add(1, flat, gl.reshape(N, M)).reshape(N, S, A)  # per-(s, a) sums
    return (at - torch.softmax(theta3, dim=-1) * at.sum(-1, keepdim=True)).reshape(theta.shape)


def _tab_bwd_triton(gl, theta, states, actions):
    from metakern.kernels.policy import tabular_log_prob_backward_triton

    _check_ranges(states, actions, theta.shape[-2], theta.shape[-1])
    N, M, _, _ = _tab_sizes(theta, states)
    return tabular_log_prob_backward_triton(gl.reshape(N, M), *_tab_views(theta, states, actions)).reshape(theta.shape)


def _tab_dbwd_cpp(gl, theta, states, actions, v, need_gl, need_theta):
    u = torch.empty_like(gl) if need_gl else None
    dth = torch.empty_like(theta) if need_theta else None
    N, M, S, A = _tab_sizes(theta, states)
    bad = _backend.cpp_module().tabular_log_prob_double_backward(
        _DTYPE_CODES[theta.dtype], _INDEX_CODES[states.dtype], gl.data_ptr(), theta.data_ptr(), states.data_ptr(),
        actions.data_ptr(), v.data_ptr(), u.data_ptr() if need_gl else 0, dth.data_ptr() if need_theta else 0,
        N, M, S, A, torch.get_num_threads(),
    )  # fmt: skip
    if bad >= 0:
        _raise_bad_step(bad, states, actions, S, A)
    return u, dth


def _tab_dbwd_reference(gl, theta, states, actions, v, need_gl, need_theta):
    _check_ranges(states, actions, theta.shape[-2], theta.shape[-1])
    return tabular_double_backward_composite(gl, theta, states, actions, v)


def _tab_dbwd_triton(gl, theta, states, actions, v, need_gl, need_theta):
    from metakern.kernels.policy import tabular_log_prob_double_backward_triton

    _check_ranges(states, actions, theta.shape[-2], theta.shape[-1])
    N, M, S, A = _tab_sizes(theta, states)
    u, dth = tabular_log_prob_double_backward_triton(
        gl.reshape(N, M), *_tab_views(theta, states, actions), v.reshape(N, S, A), need_gl, need_theta
    )
    return (u.reshape(gl.shape) if need_gl else None), (dth.reshape(theta.shape) if need_theta else None)


def tabular_double_backward_composite(gl, theta, states, actions, v):
    """(u, d_theta) of the double backward (module docstring) in differentiable torch ops: used when
    the second backward must itself be differentiated (third order and up)."""
    N, _, S, A = _tab_sizes(theta, states)
    theta3, s2, a2 = _tab_views(theta, states, actions)
    pi = torch.softmax(theta3, dim=-1)
    centered = v.reshape(N, S, A) - (pi * v.reshape(N, S, A)).sum(-1, keepdim=True)  # v_s - <pi_s, v_s>
    flat = s2.long() * A + a2.long()
    u = centered.reshape(N, S * A).gather(1, flat).reshape(gl.shape)
    visits = gl.new_zeros(N, S).scatter_add(1, s2.long(), gl.reshape(N, -1))  # sum of gl over the visits of s
    d_theta = -(visits.unsqueeze(-1) * pi * centered).reshape(theta.shape)
    return u, d_theta


_TAB_FWD = {"reference": _tab_fwd_reference, "cpp": _tab_fwd_cpp, "triton": _tab_fwd_triton}
_TAB_BWD = {"reference": _tab_bwd_reference, "cpp": _tab_bwd_cpp, "triton": _tab_bwd_triton}
_TAB_DBWD = {"reference": _tab_dbwd_reference, "cpp": _tab_dbwd_cpp, "triton": _tab_dbwd_triton}


def _tab_run(theta, states, actions):
    return _TAB_FWD[_select("tabular_log_prob", theta.device.type)](theta, states, actions)


# --------------------------------------------------------------------------------------------------
# Tabular: ops


@torch.library.custom_op("metakern::tabular_log_prob", mutates_args=())
def _tabular_op(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    check_tabular_args(theta, states, actions)
    return _tab_run(theta, states, actions)


@_tabular_op.register_fake
def _(theta, states, actions):
    check_tabular_args(theta, states, actions)
    return theta.new_empty(states.shape)


@torch.library.custom_op("metakern::tabular_log_prob_backward", mutates_args=())
def _tabular_backward_op(
    gl: torch.Tensor, theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """grad_theta = sum_t gl_t e_{s_t} (e_{a_t} - pi_{s_t})^T, the VJP of tabular_log_prob."""
    check_tabular_args(theta, states, actions)
    _check_gl(gl, theta, states)
    return _TAB_BWD[_select("tabular_log_prob", theta.device.type)](gl, theta, states, actions)


@_tabular_backward_op.register_fake
def _(gl, theta, states, actions):
    check_tabular_args(theta, states, actions)
    _check_gl(gl, theta, states)
    return torch.empty_like(theta)


@torch.library.custom_op("metakern::tabular_log_prob_double_backward", mutates_args=())
def _tabular_double_backward_op(
    gl: torch.Tensor,
    theta: torch.Tensor,
    states: torch.Tensor,
    actions: torch.Tensor,
    v: torch.Tensor,
    need_gl: bool,
    need_theta: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, d_theta): the VJP of tabular_log_prob_backward for the cotangent v of grad_theta,
    u_t = v[s_t, a_t] - <pi_{s_t}, v_{s_t}> and d_theta = -(sum_{t: s_t = s} gl_t) (diag pi_s -
    pi_s pi_s^T) v_s; either is an empty tensor when not needed. Not differentiable itself."""
    check_tabular_args(theta, states, actions)
    _check_gl(gl, theta, states)
    _check_cotangent("v", v, "theta", theta)
    backend = _select("tabular_log_prob", theta.device.type)
    u, dth = _TAB_DBWD[backend](gl, theta, states, actions, v, need_gl, need_theta)
    return (u if need_gl else gl.new_empty(0)), (dth if need_theta else theta.new_empty(0))


@_tabular_double_backward_op.register_fake
def _(gl, theta, states, actions, v, need_gl, need_theta):
    check_tabular_args(theta, states, actions)
    _check_gl(gl, theta, states)
    _check_cotangent("v", v, "theta", theta)
    return (torch.empty_like(gl) if need_gl else gl.new_empty(0)), (
        torch.empty_like(theta) if need_theta else theta.new_empty(0)
    )


def _third_order_error(op: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"metakern: {op} (the fused second-order kernel) is not differentiable. For third and higher "
            "derivatives, take the second derivative with create_graph=True: the double backward then runs as "
            "differentiable torch ops"
        )

    return backward


def _no_context(ctx, inputs, output):
    pass


_tabular_double_backward_op.register_autograd(
    _third_order_error("metakern::tabular_log_prob_double_backward"), setup_context=_no_context
)


def _tab_bwd_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _tab_bwd_backward(ctx, v):
    gl, theta, states, actions = ctx.saved_tensors
    need_gl, need_theta = ctx.needs_input_grad[:2]
    if torch.is_grad_enabled():  # create_graph=True: the result is differentiated again
        u, dth = tabular_double_backward_composite(gl, theta, states, actions, v)
    else:
        u, dth = _tabular_double_backward_op(gl, theta, states, actions, v.contiguous(), need_gl, need_theta)
    return (u if need_gl else None), (dth if need_theta else None), None, None


_tabular_backward_op.register_autograd(_tab_bwd_backward, setup_context=_tab_bwd_setup)


def _tab_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _tab_backward(ctx, gl):
    theta, states, actions = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None
    return _tabular_backward_op(gl.contiguous(), theta, states, actions), None, None


_tabular_op.register_autograd(_tab_backward, setup_context=_tab_setup)


# --------------------------------------------------------------------------------------------------
# Linear-softmax: sizes and backends


def _lin_sizes(weight: torch.Tensor, actions: torch.Tensor) -> tuple[int, int, int, int]:
    """(N, M, F, A)."""
    N = weight.shape[0] if weight.dim() == 3 else 1
    return N, actions.numel() // N, weight.shape[-2], weight.shape[-1]


def _lin_views(weight, features, actions):
    N, M, F, A = _lin_sizes(weight, actions)
    return weight.reshape(N, F, A), features.reshape(N, M, F), actions.reshape(N, M)


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _lin_fwd_cpp(weight, features, actions):
    out = torch.empty(actions.shape, dtype=weight.dtype)
    N, M, F, A = _lin_sizes(weight, actions)
    bad = _backend.cpp_module().linear_softmax_log_prob(
        _DTYPE_CODES[weight.dtype], _INDEX_CODES[actions.dtype], weight.data_ptr(), features.data_ptr(),
        actions.data_ptr(), out.data_ptr(), N, M, F, A, torch.get_num_threads(),
    )  # fmt: skip
    if bad >= 0:
        _raise_bad_step(bad, None, actions, 0, A)
    return out


def _lin_fwd_reference(weight, features, actions):
    _check_ranges(None, actions, 0, weight.shape[-1])
    return linear_softmax_log_prob_reference(weight, features, actions)


def _lin_fwd_triton(weight, features, actions):
    from metakern.kernels.policy import linear_softmax_log_prob_triton

    _check_ranges(None, actions, 0, weight.shape[-1])
    return linear_softmax_log_prob_triton(*_lin_views(weight, features, actions)).reshape(actions.shape)


def _lin_bwd_cpp(gl, weight, features, actions, need_w, need_x):
    gw = torch.empty_like(weight) if need_w else None
    gx = torch.empty_like(features) if need_x else None
    N, M, F, A = _lin_sizes(weight, actions)
    bad = _backend.cpp_module().linear_softmax_log_prob_backward(
        _DTYPE_CODES[weight.dtype], _INDEX_CODES[actions.dtype], gl.data_ptr(), weight.data_ptr(),
        features.data_ptr(), actions.data_ptr(), _ptr(gw), _ptr(gx), N, M, F, A, torch.get_num_threads(),
    )  # fmt: skip
    if bad >= 0:
        _raise_bad_step(bad, None, actions, 0, A)
    return gw, gx


def _lin_bwd_reference(gl, weight, features, actions, need_w, need_x):
    _check_ranges(None, actions, 0, weight.shape[-1])
    N, M, _, A = _lin_sizes(weight, actions)
    w, x, a = _lin_views(weight, features, actions)
    p = torch.softmax(torch.bmm(x, w), dim=-1)
    c = gl.reshape(N, M, 1) * (torch.nn.functional.one_hot(a.long(), A).to(p.dtype) - p)  # gl (e_a - pi)
    gw = torch.bmm(x.transpose(1, 2), c).reshape(weight.shape) if need_w else None
    gx = torch.bmm(c, w.transpose(1, 2)).reshape(features.shape) if need_x else None
    return gw, gx


def _lin_bwd_triton(gl, weight, features, actions, need_w, need_x):
    from metakern.kernels.policy import linear_softmax_log_prob_backward_triton

    _check_ranges(None, actions, 0, weight.shape[-1])
    N, M, _, _ = _lin_sizes(weight, actions)
    gw, gx = linear_softmax_log_prob_backward_triton(
        gl.reshape(N, M), *_lin_views(weight, features, actions), need_w, need_x
    )
    return (gw.reshape(weight.shape) if need_w else None), (gx.reshape(features.shape) if need_x else None)


def _lin_dbwd_cpp(gl, weight, features, actions, vw, vx, need_gl, need_w, need_x):
    u = torch.empty_like(gl) if need_gl else None
    dw = torch.empty_like(weight) if need_w else None
    dx = torch.empty_like(features) if need_x else None
    N, M, F, A = _lin_sizes(weight, actions)
    bad = _backend.cpp_module().linear_softmax_log_prob_double_backward(
        _DTYPE_CODES[weight.dtype], _INDEX_CODES[actions.dtype], gl.data_ptr(), weight.data_ptr(),
        features.data_ptr(), actions.data_ptr(), _ptr(vw), _ptr(vx), _ptr(u), _ptr(dw), _ptr(dx),
        N, M, F, A, torch.get_num_threads(),
    )  # fmt: skip
    if bad >= 0:
        _raise_bad_step(bad, None, actions, 0, A)
    return u, dw, dx


def _lin_dbwd_reference(gl, weight, features, actions, vw, vx, need_gl, need_w, need_x):
    _check_ranges(None, actions, 0, weight.shape[-1])
    return linear_double_backward_composite(gl, weight, features, actions, vw, vx)


def _lin_dbwd_triton(gl, weight, features, actions, vw, vx, need_gl, need_w, need_x):
    from metakern.kernels.policy import linear_softmax_log_prob_double_backward_triton

    _check_ranges(None, actions, 0, weight.shape[-1])
    N, M, F, A = _lin_sizes(weight, actions)
    u, dw, dx = linear_softmax_log_prob_double_backward_triton(
        gl.reshape(N, M),
        *_lin_views(weight, features, actions),
        None if vw is None else vw.reshape(N, F, A),
        None if vx is None else vx.reshape(N, M, F),
        need_gl,
        need_w,
        need_x,
    )
    return (
        u.reshape(gl.shape) if need_gl else None,
        dw.reshape(weight.shape) if need_w else None,
        dx.reshape(features.shape) if need_x else None,
    )


def linear_double_backward_composite(gl, weight, features, actions, vw, vx):
    """(u, d_weight, d_features) of the double backward (module docstring) in differentiable torch
    ops; vw / vx may be None (zero). Used for third order and up."""
    N, M, F, A = _lin_sizes(weight, actions)
    w, x, a = _lin_views(weight, features, actions)
    p = torch.softmax(torch.bmm(x, w), dim=-1)  # [N, M, A]
    g = gl.reshape(N, M, 1)
    c = g * (torch.nn.functional.one_hot(a.long(), A).to(p.dtype) - p)  # gl (e_a - pi)
    y = p.new_zeros(N, M, A)
    if vw is not None:
        y = y + torch.bmm(x, vw.reshape(N, F, A))
    if vx is not None:
        y = y + torch.bmm(vx.reshape(N, M, F), w)
    centered = y - (p * y).sum(-1, keepdim=True)
    u = centered.gather(2, a.long().unsqueeze(-1)).reshape(gl.shape)
    q = -g * p * centered
    dw = torch.bmm(x.transpose(1, 2), q)
    dx = torch.bmm(q, w.transpose(1, 2))
    if vx is not None:
        dw = dw + torch.bmm(vx.reshape(N, M, F).transpose(1, 2), c)
    if vw is not None:
        dx = dx + torch.bmm(c, vw.reshape(N, F, A).transpose(1, 2))
    return u, dw.reshape(weight.shape), dx.reshape(features.shape)


_LIN_FWD = {"reference": _lin_fwd_reference, "cpp": _lin_fwd_cpp, "triton": _lin_fwd_triton}
_LIN_BWD = {"reference": _lin_bwd_reference, "cpp": _lin_bwd_cpp, "triton": _lin_bwd_triton}
_LIN_DBWD = {"reference": _lin_dbwd_reference, "cpp": _lin_dbwd_cpp, "triton": _lin_dbwd_triton}


def _lin_run(weight, features, actions):
    return _LIN_FWD[_select("linear_softmax_log_prob", weight.device.type)](weight, features, actions)


# --------------------------------------------------------------------------------------------------
# Linear-softmax: ops


@torch.library.custom_op("metakern::linear_softmax_log_prob", mutates_args=())
def _linear_op(weight: torch.Tensor, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    check_linear_args(weight, features, actions)
    return _lin_run(weight, features, actions)


@_linear_op.register_fake
def _(weight, features, actions):
    check_linear_args(weight, features, actions)
    return weight.new_empty(actions.shape)


@torch.library.custom_op("metakern::linear_softmax_log_prob_backward", mutates_args=())
def _linear_backward_op(
    gl: torch.Tensor,
    weight: torch.Tensor,
    features: torch.Tensor,
    actions: torch.Tensor,
    need_weight: bool,
    need_features: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_weight, grad_features), the VJP of linear_softmax_log_prob; an output not needed is an
    empty tensor."""
    check_linear_args(weight, features, actions)
    _check_gl(gl, weight, actions)
    backend = _select("linear_softmax_log_prob", weight.device.type)
    gw, gx = _LIN_BWD[backend](gl, weight, features, actions, need_weight, need_features)
    return (gw if need_weight else weight.new_empty(0)), (gx if need_features else features.new_empty(0))


@_linear_backward_op.register_fake
def _(gl, weight, features, actions, need_weight, need_features):
    check_linear_args(weight, features, actions)
    _check_gl(gl, weight, actions)
    return (torch.empty_like(weight) if need_weight else weight.new_empty(0)), (
        torch.empty_like(features) if need_features else features.new_empty(0)
    )


@torch.library.custom_op("metakern::linear_softmax_log_prob_double_backward", mutates_args=())
def _linear_double_backward_op(
    gl: torch.Tensor,
    weight: torch.Tensor,
    features: torch.Tensor,
    actions: torch.Tensor,
    v_weight: torch.Tensor | None,
    v_features: torch.Tensor | None,
    need_gl: bool,
    need_weight: bool,
    need_features: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, d_weight, d_features): the VJP of linear_softmax_log_prob_backward for the cotangents
    v_weight, v_features of its outputs (None = zero); an output not needed is an empty tensor.
    Not differentiable itself."""
    check_linear_args(weight, features, actions)
    _check_gl(gl, weight, actions)
    _check_cotangent("v_weight", v_weight, "weight", weight)
    _check_cotangent("v_features", v_features, "features", features)
    backend = _select("linear_softmax_log_prob", weight.device.type)
    u, dw, dx = _LIN_DBWD[backend](gl, weight, features, actions, v_weight, v_features, need_gl, need_weight,
                                   need_features)  # fmt: skip
    return (
        u if need_gl else gl.new_empty(0),
        dw if need_weight else weight.new_empty(0),
        dx if need_features else features.new_empty(0),
    )


@_linear_double_backward_op.register_fake
def _(gl, weight, features, actions, v_weight, v_features, need_gl, need_weight, need_features):
    check_linear_args(weight, features, actions)
    _check_gl(gl, weight, actions)
    _check_cotangent("v_weight", v_weight, "weight", weight)
    _check_cotangent("v_features", v_features, "features", features)
    return (
        torch.empty_like(gl) if need_gl else gl.new_empty(0),
        torch.empty_like(weight) if need_weight else weight.new_empty(0),
        torch.empty_like(features) if need_features else features.new_empty(0),
    )


_linear_double_backward_op.register_autograd(
    _third_order_error("metakern::linear_softmax_log_prob_double_backward"), setup_context=_no_context
)


def _lin_bwd_setup(ctx, inputs, output):
    gl, weight, features, actions, need_w, need_x = inputs
    ctx.need_w, ctx.need_x = need_w, need_x
    ctx.save_for_backward(gl, weight, features, actions)


def _lin_bwd_backward(ctx, v_weight, v_features):
    gl, weight, features, actions = ctx.saved_tensors
    need_gl, need_w, need_x = ctx.needs_input_grad[:3]
    # Cotangents of outputs that were not computed (empty) or not used count as zero.
    vw = v_weight if ctx.need_w and v_weight is not None and v_weight.numel() > 0 else None
    vx = v_features if ctx.need_x and v_features is not None and v_features.numel() > 0 else None
    if torch.is_grad_enabled():  # create_graph=True: the result is differentiated again
        u, dw, dx = linear_double_backward_composite(gl, weight, features, actions, vw, vx)
    else:
        u, dw, dx = _linear_double_backward_op(
            gl, weight, features, actions, None if vw is None else vw.contiguous(),
            None if vx is None else vx.contiguous(), need_gl, need_w, need_x,
        )  # fmt: skip
    return (u if need_gl else None), (dw if need_w else None), (dx if need_x else None), None, None, None


_linear_backward_op.register_autograd(_lin_bwd_backward, setup_context=_lin_bwd_setup)


def _lin_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _lin_backward(ctx, gl):
    weight, features, actions = ctx.saved_tensors
    need_w, need_x = ctx.needs_input_grad[:2]
    if not (need_w or need_x):
        return None, None, None
    gw, gx = _linear_backward_op(gl.contiguous(), weight, features, actions, need_w, need_x)
    return (gw if need_w else None), (gx if need_x else None), None


_linear_op.register_autograd(_lin_backward, setup_context=_lin_setup)


# --------------------------------------------------------------------------------------------------
# Public functions


def _indices(states: object, actions: object) -> tuple[object, object]:
    """Both contiguous; actions converted to states' integer dtype when the two differ."""
    if isinstance(states, torch.Tensor) and isinstance(actions, torch.Tensor):
        if actions.dtype != states.dtype and actions.dtype in INDEX_DTYPES and states.dtype in INDEX_DTYPES:
            actions = actions.to(states.dtype)
        return states.contiguous(), actions.contiguous()
    return states, actions


def _contiguous(t: object) -> object:
    return t.contiguous() if isinstance(t, torch.Tensor) else t


def tabular_log_prob(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of a tabular softmax policy: ``l = log_softmax(theta, -1)[states, actions]``.

    Args:
        theta: ``[S, A]`` logits, float32 or float64; or ``[N, S, A]``, one policy per task.
        states, actions: ``[B, T]`` (``[N, B, T]`` with a batched theta) int64 or int32 indices,
            in [0, S) and [0, A); out-of-range indices raise ValueError.

    Returns ``l`` of states' shape in theta's dtype. Differentiable in theta with closed-form
    derivatives: the backward is a scatter-add of ``gl_t (e_{a_t} - pi_{s_t})``, and its own
    backward (for Hessian-vector products: ``torch.autograd.grad`` with ``create_graph=True`` then
    a second ``grad``) a gather and a per-state sum, so an HVP costs O(B*T + S*A). Higher orders
    work too (module docstring of ``metakern.ops.policy``).
    """
    states, actions = _indices(states, actions)
    theta = _contiguous(theta)
    check_tabular_args(theta, states, actions)
    if direct_call_ok(theta):
        return _tab_run(theta, states, actions)
    return _tabular_op(theta, states, actions)


def linear_softmax_log_prob(weight: torch.Tensor, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of a linear-softmax policy: ``l = log_softmax(features @ weight, -1)[actions]``.

    Args:
        weight: ``[F, A]``, float32 or float64; or ``[N, F, A]``, one policy per task.
        features: ``[B, T, F]`` (``[N, B, T, F]``), the dtype of weight.
        actions: ``[B, T]`` (``[N, B, T]``) int64 or int32 indices in [0, A).

    Returns ``l`` of actions' shape. Differentiable in weight and features with closed-form first
    and second derivatives, O(B*T*F*A) each, with no [B, T, A] autograd tape.
    """
    weight, features, actions = _contiguous(weight), _contiguous(features), _contiguous(actions)
    check_linear_args(weight, features, actions)
    if direct_call_ok(weight, features):
        return _lin_run(weight, features, actions)
    return _linear_op(weight, features, actions)
