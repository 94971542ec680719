"""``metakern::linear_scan``: the linear recurrence y_t = a_t * y_{t-1} + x_t over time.

One ``torch.library`` op (schema, fake kernel, autograd) dispatched at run time to the C++, CUDA,
Triton or reference implementation (see ``metakern._backend``). Its backward is two more scans
of the same op plus elementwise torch ops, so the op is differentiable any number of times:

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


def check_scan_args(x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor) -> None:
    """Validate linear_scan's tensors: [B, T] x and a, [B] carry, one dtype, one device."""
    if (
        isinstance(x, torch.Tensor)
        and isinstance(a, torch.Tensor)
        and isinstance(carry, torch.Tensor)
        and x.dtype in _DTYPE_CODES
        and x.dim() == 2
        and x.numel() > 0
        and a.shape == x.shape
        and carry.dim() == 1
        and carry.shape[0] == x.shape[0]
        and a.dtype == x.dtype == carry.dtype
        and a.device == x.device == carry.device
        and x.is_contiguous()
        and a.is_contiguous()
        and carry.is_contiguous()
    ):
        return  # the common case in one pass; otherwise find and name what is wrong
    _validate.tensor("x", x, ndim=2, layout="[B, T]")
    _validate.tensor("a", a, ndim=2, layout="[B, T]")
    _validate.tensor("carry", carry, ndim=1, layout="[B]")
    _validate.same_device("a", a, "x", x)
    _validate.same_device("carry", carry, "x", x)
    _check_coefficient_dtype("a", a, x)
    _check_coefficient_dtype("carry", carry, x)
    _validate.shape("a", a, tuple(x.shape), "[B, T] of x")
    _validate.shape("carry", carry, (x.shape[0],), "[B] of x")


_HALF = (torch.bfloat16, torch.float16)


def coefficient_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype in which ``a`` and ``carry`` are best given for inputs of ``dtype``: 16-bit inputs take
    float32 coefficients, so that a discount such as 0.99 is not rounded to 16 bits (0.988 in bf16)."""
    return torch.float32 if dtype in _HALF else dtype


def _check_coefficient_dtype(name: str, t: torch.Tensor, x: torch.Tensor) -> None:
    if t.dtype == x.dtype or (x.dtype in _HALF and t.dtype == torch.float32):
        return
    allowed = f"{x.dtype} or torch.float32" if x.dtype in _HALF else f"{x.dtype}"
    raise TypeError(f"{name}: expected dtype {allowed} (x is {x.dtype}), got {t.dtype}")


def _scan_cpp(x, a, carry, reverse):
    y = torch.empty_like(x)
    _backend.cpp_module().linear_scan(
        _DTYPE_CODES[x.dtype],
        x.data_ptr(),
        a.data_ptr(),
        carry.data_ptr(),
        y.data_ptr(),
        x.shape[0],
        x.shape[1],
        reverse,
        torch.get_num_threads(),
    )
    return y


def _scan_cuda(x, a, carry, reverse):
    y = torch.empty_like(x)
    _backend.cuda_module().linear_scan(
        _DTYPE_CODES[x.dtype],
        x.data_ptr(),
        a.data_ptr(),
        carry.data_ptr(),
        y.data_ptr(),
        x.shape[0],
        x.shape[1],
        reverse,
        x.device.index,
        torch.cuda.current_stream(x.device).cuda_stream,
    )
    return y


def _scan_triton(x, a, carry, reverse):
    from metakern.kernels.scan import linear_scan_triton

    return linear_scan_triton(x, a, carry, reverse)


_IMPLS = {
    "reference": linear_scan_reference,
    "cpp": _scan_cpp,
    "cuda": _scan_cuda,
    "triton": _scan_triton,
}


def _run(x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor, reverse: bool) -> torch.Tensor:
    impl = _IMPLS[_backend.select("linear_scan", x.device.type)]
    if a.dtype != x.dtype or carry.dtype != x.dtype:
        # 16-bit x with float32 coefficients: scan in float32, round once at the end.
        return impl(x.float(), a.float(), carry.float(), reverse).to(x.dtype)
    return impl(x, a, carry, reverse)


@torch.library.custom_op("metakern::linear_scan", mutates_args=())
def _linear_scan_op(x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor, reverse: bool) -> torch.Tensor:
    # The op is also reachable as torch.ops.metakern.linear_scan, bypassing the public wrapper:
    # check again here so that nothing malformed reaches a kernel.
    check_scan_args(x, a, carry)
    return _run(x, a, carry, reverse)


@_linear_scan_op.register_fake
def _(x, a, carry, reverse):
    check_scan_args(x, a, carry)  # also the Meta kernel: a CPU x with a meta `a` lands here, not in _linear_scan_op
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    _, a, carry, reverse = inputs
    ctx.reverse = reverse
    ctx.save_for_backward(a, carry, output)


def _backward(ctx, gy):
    a, carry, y = ctx.saved_tensors
    need_x, need_a, need_c = ctx.needs_input_grad[:3]
    gy = gy.contiguous()
    B = a.shape[0]
    zero_col = a.new_zeros(B, 1)
    if not ctx.reverse:
        a_shift = torch.cat([a[:, 1:], zero_col], dim=1)  # a_{t+1}
        g = _linear_scan_op(gy, a_shift, a.new_zeros(B), True)
    else:
        a_shift = torch.cat([zero_col, a[:, :-1]], dim=1)  # a_{t-1}
        g = _linear_scan_op(gy, a_shift, a.new_zeros(B), False)
    da = dc = None
    if need_a:
        if not ctx.reverse:
            y_other = torch.cat([carry[:, None], y[:, :-1]], dim=1)  # y_{t-1}
        else:
            y_other = torch.cat([y[:, 1:], carry[:, None]], dim=1)  # y_{t+1}
        da = (g * y_other).to(a.dtype)
    if need_c:
        dc = (a[:, 0] * g[:, 0] if not ctx.reverse else a[:, -1] * g[:, -1]).to(carry.dtype)
    return (g if need_x else None), da, dc, None


_linear_scan_op.register_autograd(_backward, setup_context=_setup_context)


def _is_plain(t: torch.Tensor) -> bool:
    return type(t) is torch.Tensor and not torch._C._functorch.is_functorch_wrapped_tensor(t)


def linear_scan(
    x: torch.Tensor,
    a: torch.Tensor | float,
    carry: torch.Tensor | None = None,
    reverse: bool = False,
) -> torch.Tensor:
    """Linear recurrence over the time axis of ``[B, T]`` tensors.

    ``reverse=False``: ``y[:, t] = a[:, t] * y[:, t-1] + x[:, t]`` with ``y[:, -1] = carry``.
    ``reverse=True``: ``y[:, t] = a[:, t] * y[:, t+1] + x[:, t]`` with ``y[:, T] = carry``
    (discounted returns: ``x`` = rewards, ``a`` = gamma * (1 - done), ``carry`` = bootstrap value).

    Args:
        x: ``[B, T]`` float32/float64/bfloat16/float16, contiguous.
        a: ``[B, T]`` coefficients on x's device, of x's dtype (or float32 when x is bf16/fp16,
            the recommended form: 16-bit discounts lose precision), or a Python number.
        carry: ``[B]`` initial value, dtype as for ``a`` (zeros if None).
        reverse: scan from the last step to the first.

    Returns ``[B, T]`` of x's dtype. 16-bit inputs accumulate in float32. Differentiable in x, a
    and carry, any number of times (the backward is itself a linear scan).
    """
    _validate.tensor("x", x, ndim=2, layout="[B, T]")
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {type(reverse).__name__}")
    if not isinstance(a, torch.Tensor):
        a = torch.full_like(x, _validate.real("a", a), dtype=coefficient_dtype(x.dtype))
    if carry is None:
        carry = x.new_zeros(x.shape[0], dtype=a.dtype if isinstance(a, torch.Tensor) else x.dtype)
    check_scan_args(x, a, carry)
    if (
        not torch.compiler.is_compiling()
        and not (torch.is_grad_enabled() and (x.requires_grad or a.requires_grad or carry.requires_grad))
        and _is_plain(x)
        and not torch.autograd.profiler._is_profiler_enabled
    ):
        # Nothing to record for autograd: call the kernel directly, skipping the dispatcher's
        # per-call cost (about 10 us), which dominates for the small tensors of RL inner loops.
        return _run(x, a, carry, reverse)
    return _linear_scan_op(x, a, carry, reverse)
