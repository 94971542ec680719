"""``metakern::linear_scan``: the linear recurrence y_t = a_t * y_{t-1} + x_t over time.

One ``torch.library`` op (schema, fake kernel, autograd) dispatched at run time to the C++, CUDA,
Triton or reference implementation (see ``metakern._backend``). Tensors are batch-major ``[B, T]``
or, with ``time_major=True``, ``[T, B]`` (the layout of RL rollout buffers). The backward,
``metakern::linear_scan_backward``, is one more scan (fused with da's product on the C++ backend)
whose own gradients are again written with linear_scan, so the op is differentiable any number
of times:

  forward  y_t = a_t y_{t-1} + x_t,  y_{-1} = c
    g_t  = dL/dy_t + a_{t+1} g_{t+1}          (a reverse scan of the incoming gradient)
    dx_t = g_t,   da_t = g_t y_{t-1},   dc = a_0 g_0
  reverse  y_t = a_t y_{t+1} + x_t,  y_T = c
    g_t  = dL/dy_t + a_{t-1} g_{t-1}          (a forward scan)
    dx_t = g_t,   da_t = g_t y_{t+1},   dc = a_{T-1} g_{T-1}
"""

from __future__ import annotations

import torch

from .. import _backend, _validate
from .scan_reference import linear_scan_reference

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
_HALF = (torch.bfloat16, torch.float16)


def coefficient_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype in which ``a`` and ``carry`` are best given for inputs of ``dtype``: 16-bit inputs take
    float32 coefficients, so that a discount such as 0.99 is not rounded to 16 bits (0.988 in bf16)."""
    return torch.float32 if dtype in _HALF else dtype


def _layout(time_major: bool) -> str:
    return "[T, B]" if time_major else "[B, T]"


def _check_coefficient_dtype(name: str, t: torch.Tensor, x: torch.Tensor) -> None:
    if t.dtype == x.dtype or (x.dtype in _HALF and t.dtype == torch.float32):
        return
    allowed = f"{x.dtype} or torch.float32" if x.dtype in _HALF else f"{x.dtype}"
    raise TypeError(f"{name}: expected dtype {allowed} (x is {x.dtype}), got {t.dtype}")


def check_scan_args(x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor, time_major: bool = False) -> None:
    """Validate linear_scan's tensors: x and a [B, T] ([T, B] if time_major), carry [B], one device;
    a and carry of x's dtype (or float32 for 16-bit x)."""
    if (
        isinstance(x, torch.Tensor)
        and isinstance(a, torch.Tensor)
        and isinstance(carry, torch.Tensor)
        and x.dtype in _DTYPE_CODES
        and x.dim() == 2
        and x.numel() > 0
        and a.shape == x.shape
        and carry.dim() == 1
        and carry.shape[0] == x.shape[1 if time_major else 0]
        and a.dtype == x.dtype == carry.dtype
        and a.device == x.device == carry.device
        and x.is_contiguous()
        and a.is_contiguous()
        and carry.is_contiguous()
    ):
        return  # the common case in one pass; otherwise find and name what is wrong
    layout = _layout(time_major)
    _validate.tensor("x", x, ndim=2, layout=layout)
    _validate.tensor("a", a, ndim=2, layout=layout)
    _validate.tensor("carry", carry, ndim=1, layout="[B]")
    _validate.same_device("a", a, "x", x)
    _validate.same_device("carry", carry, "x", x)
    _check_coefficient_dtype("a", a, x)
    _check_coefficient_dtype("carry", carry, x)
    _validate.shape("a", a, tuple(x.shape), f"{layout} of x")
    _validate.shape("carry", carry, (x.shape[1 if time_major else 0],), f"[B] of x {layout}")


def _sizes(x: torch.Tensor, time_major: bool) -> tuple[int, int]:
    """(B, T)."""
    return (x.shape[1], x.shape[0]) if time_major else (x.shape[0], x.shape[1])


def _scan_reference(x, a, carry, reverse, time_major):
    if time_major:
        return linear_scan_reference(x.t(), a.t(), carry, reverse).t().contiguous()
    return linear_scan_reference(x, a, carry, reverse)


def _scan_cpp(x, a, carry, reverse, time_major):
    y = torch.empty_like(x)
    B, T = _sizes(x, time_major)
    _backend.cpp_module().linear_scan(
        _DTYPE_CODES[x.dtype], x.data_ptr(), a.data_ptr(), carry.data_ptr(), y.data_ptr(),
        B, T, reverse, time_major, torch.get_num_threads(),
    )  # fmt: skip
    return y


def _scan_cuda(x, a, carry, reverse, time_major):
    y = torch.empty_like(x)
    B, T = _sizes(x, time_major)
    _backend.cuda_module().linear_scan(
        _DTYPE_CODES[x.dtype], x.data_ptr(), a.data_ptr(), carry.data_ptr(), y.data_ptr(),
        B, T, reverse, time_major, x.device.index, torch.cuda.current_stream(x.device).cuda_stream,
    )  # fmt: skip
    return y


def _scan_triton(x, a, carry, reverse, time_major):
    from metakern.kernels.scan import linear_scan_triton

    return linear_scan_triton(x, a, carry, reverse, time_major)


_IMPLS = {
    "reference": _scan_reference,
    "cpp": _scan_cpp,
    "cuda": _scan_cuda,
    "triton": _scan_triton,
}


def _run(x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor, reverse: bool, time_major: bool) -> torch.Tensor:
    impl = _IMPLS[_backend.select("linear_scan", x.device.type)]
    if a.dtype != x.dtype or carry.dtype != x.dtype:
        # 16-bit x with float32 coefficients: scan in float32, round once at the end.
        return impl(x.float(), a.float(), carry.float(), reverse, time_major).to(x.dtype)
    return impl(x, a, carry, reverse, time_major)


@torch.library.custom_op("metakern::linear_scan", mutates_args=())
def _linear_scan_op(
    x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor, reverse: bool, time_major: bool = False
) -> torch.Tensor:
    # The op is also reachable as torch.ops.metakern.linear_scan, bypassing the public wrapper:
    # check again here so that nothing malformed reaches a kernel.
    check_scan_args(x, a, carry, time_major)
    return _run(x, a, carry, reverse, time_major)


@_linear_scan_op.register_fake
def _(x, a, carry, reverse, time_major=False):
    # Also the Meta kernel: a CPU x with a meta `a` lands here, not in _linear_scan_op.
    check_scan_args(x, a, carry, time_major)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def shifted(t: torch.Tensor, edge: torch.Tensor, dim: int, later: bool) -> torch.Tensor:
    """Along ``dim``: out_s = t_{s+1} with ``edge`` last (later=True), or t_{s-1} with ``edge`` first."""
    n = t.shape[dim]
    edge = edge.unsqueeze(dim)
    if later:
        return torch.cat([t.narrow(dim, 1, n - 1), edge], dim=dim)
    return torch.cat([edge, t.narrow(dim, 0, n - 1)], dim=dim)


def _scan_vjp(scan, gy, a, y, carry, reverse: bool, time_major: bool, need_a: bool):
    """(g, da): gradients of y = linear_scan(x, a, carry, reverse) w.r.t. x and a, as a composition
    of ``scan`` (a linear_scan with the op's signature) and torch ops. Forward scans pass gradients
    back from a_{t+1}; reverse scans from a_{t-1}."""
    dim = 0 if time_major else 1
    zeros = carry.new_zeros(carry.shape)
    g = scan(gy, shifted(a, zeros, dim, later=not reverse), zeros, not reverse, time_major)
    da = (g * shifted(y, carry.to(y.dtype), dim, later=reverse)).to(a.dtype) if need_a else None  # g_t y_{t-/+1}
    return g, da


def _check_backward_args(gy, a, y, carry, time_major):
    check_scan_args(gy, a, carry, time_major)
    _validate.tensor("y", y, ndim=2, layout=_layout(time_major))
    _validate.same_device("y", y, "gy", gy)
    _validate.same_dtype("y", y, "gy", gy)
    _validate.shape("y", y, tuple(gy.shape), "the shape of gy")


def _backward_cpp(gy, a, y, carry, reverse, time_major, need_a):
    g = torch.empty_like(gy)
    da = torch.empty_like(a) if need_a else None
    B, T = _sizes(gy, time_major)
    _backend.cpp_module().linear_scan_backward(
        _DTYPE_CODES[gy.dtype], gy.data_ptr(), a.data_ptr(), y.data_ptr(), carry.data_ptr(), g.data_ptr(),
        da.data_ptr() if need_a else 0, B, T, reverse, time_major, torch.get_num_threads(),
    )  # fmt: skip
    return g, da


@torch.library.custom_op("metakern::linear_scan_backward", mutates_args=())
def _linear_scan_backward_op(
    gy: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    carry: torch.Tensor,
    reverse: bool,
    time_major: bool,
    need_a: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (g, da) of linear_scan w.r.t. x and a given the output gradient gy; da is an empty
    tensor when ``need_a`` is False. The C++ backend computes both in one pass with no shifted
    copies (float32/float64); the other backends and dtypes compose the forward op."""
    _check_backward_args(gy, a, y, carry, time_major)
    backend = _backend.select("linear_scan", gy.device.type)
    if backend == "cpp" and gy.dtype in (torch.float32, torch.float64) and a.dtype == carry.dtype == gy.dtype:
        g, da = _backward_cpp(gy, a, y, carry, reverse, time_major, need_a)
    else:
        g, da = _scan_vjp(_run, gy, a, y, carry, reverse, time_major, need_a)
    return g, (da if need_a else a.new_empty(0))


@_linear_scan_backward_op.register_fake
def _(gy, a, y, carry, reverse, time_major, need_a):
    _check_backward_args(gy, a, y, carry, time_major)
    return torch.empty_like(gy), (torch.empty_like(a) if need_a else a.new_empty(0))


def _backward_setup_context(ctx, inputs, output):
    _, a, y, carry, reverse, time_major, need_a = inputs
    ctx.reverse, ctx.time_major, ctx.need_a = reverse, time_major, need_a
    ctx.save_for_backward(a, y, carry, output[0])


def _backward_backward(ctx, grad_g, grad_da):
    """Second-order terms. The backward computes g = scan(gy, a_shift, 0, !reverse) and
    da = g * y_shift; its gradients are those of that composition, written with linear_scan ops
    (so the chain stays differentiable)."""
    a, y, carry, g = ctx.saved_tensors
    need_gy, need_a, need_y, need_c = ctx.needs_input_grad[:4]
    rev, tm = ctx.reverse, ctx.time_major
    dim = 0 if tm else 1
    zeros = carry.new_zeros(carry.shape)
    use_da = ctx.need_a and grad_da.numel() > 0
    total = grad_g + grad_da * shifted(y, carry.to(y.dtype), dim, later=rev) if use_da else grad_g
    a_shift = shifted(a, zeros, dim, later=not rev)
    d_gy, d_ashift = _scan_vjp(_linear_scan_op, total.contiguous(), a_shift, g, zeros, not rev, tm, need_a)
    d_a = shifted(d_ashift, zeros, dim, later=rev).to(a.dtype) if need_a else None
    d_y = d_c = None
    if use_da and (need_y or need_c):
        d_yshift = grad_da * g
        d_y = shifted(d_yshift, zeros.to(d_yshift.dtype), dim, later=not rev).to(y.dtype)
        d_c = d_yshift.select(dim, a.shape[dim] - 1 if rev else 0).to(carry.dtype)
    return (d_gy if need_gy else None), d_a, d_y, d_c, None, None, None


_linear_scan_backward_op.register_autograd(_backward_backward, setup_context=_backward_setup_context)


def _setup_context(ctx, inputs, output):
    _, a, carry, reverse, time_major = inputs
    ctx.reverse = reverse
    ctx.time_major = time_major
    ctx.save_for_backward(a, carry, output)


def _backward(ctx, gy):
    a, carry, y = ctx.saved_tensors
    need_x, need_a, need_c = ctx.needs_input_grad[:3]
    rev, tm = ctx.reverse, ctx.time_major
    g, da = _linear_scan_backward_op(gy.contiguous(), a, y, carry, rev, tm, need_a)
    dc = None
    if need_c:
        dim = 0 if tm else 1
        edge = a.shape[dim] - 1 if rev else 0
        dc = (a.select(dim, edge) * g.select(dim, edge)).to(carry.dtype)
    return (g if need_x else None), (da if need_a else None), dc, None, None


_linear_scan_op.register_autograd(_backward, setup_context=_setup_context)


def direct_call_ok(*tensors: torch.Tensor | None) -> bool:
    """True when an op may call its kernel directly instead of going through the dispatcher: not
    compiling, nothing for autograd to record, plain tensors, no profiler. The dispatcher costs
    about 10 us a call, which dominates for the small tensors of RL inner loops."""
    if torch.compiler.is_compiling() or torch.autograd.profiler._is_profiler_enabled:
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if (
            (grad and t.requires_grad)
            or type(t) is not torch.Tensor
            or torch._C._functorch.is_functorch_wrapped_tensor(t)
        ):
            return False
    return True


def linear_scan(
    x: torch.Tensor,
    a: torch.Tensor | float,
    carry: torch.Tensor | None = None,
    reverse: bool = False,
    *,
    time_major: bool = False,
) -> torch.Tensor:
    """Linear recurrence over the time axis.

    ``reverse=False``: ``y[:, t] = a[:, t] * y[:, t-1] + x[:, t]`` with ``y[:, -1] = carry``.
    ``reverse=True``: ``y[:, t] = a[:, t] * y[:, t+1] + x[:, t]`` with ``y[:, T] = carry``
    (discounted returns: ``x`` = rewards, ``a`` = gamma * (1 - done), ``carry`` = bootstrap value).

    Args:
        x: ``[B, T]`` (or ``[T, B]`` with ``time_major=True``), float32/float64/bfloat16/float16,
            contiguous.
        a: coefficients of x's shape and device, of x's dtype (or float32 when x is bf16/fp16, the
            recommended form: 16-bit discounts lose precision), or a Python number for all steps.
        carry: ``[B]`` initial value, dtype as for ``a`` (zeros if None).
        reverse: scan from the last step to the first.
        time_major: tensors are ``[T, B]``, as rollout buffers usually are; this is also the
            fastest layout (each step is one contiguous row).

    Returns x's shape and dtype. 16-bit inputs accumulate in float32. Differentiable in x, a and
    carry, any number of times (the backward is itself a linear scan).
    """
    if not isinstance(time_major, bool):
        raise TypeError(f"time_major: expected a bool, got {type(time_major).__name__}")
    _validate.tensor("x", x, ndim=2, layout=_layout(time_major))
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {type(reverse).__name__}")
    if not isinstance(a, torch.Tensor):
        a = torch.full_like(x, _validate.real("a", a), dtype=coefficient_dtype(x.dtype))
    if carry is None:
        carry = x.new_zeros(_sizes(x, time_major)[0], dtype=a.dtype)
    check_scan_args(x, a, carry, time_major)
    if direct_call_ok(x, a, carry):
        return _run(x, a, carry, reverse, time_major)
    return _linear_scan_op(x, a, carry, reverse, time_major)
