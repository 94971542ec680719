"""Triton linear scan: y_t = a_t * y_{t-1} + x_t over the rows of [B, T] tensors (or the columns
of time-major [T, B] tensors: the same kernel with other strides and tile shapes).

Each program owns BLOCK_B rows and walks their time axis in tiles of BLOCK_T steps. Within a tile,
``tl.associative_scan`` composes the affine maps h -> a*h + x along time (operator
(A1, X1) then (A2, X2) = (A1*A2, A2*X1 + X2)); the tile's incoming carry is applied with one
multiply-add and the last column becomes the next tile's carry. Reverse scans read the tile with
reversed time indices. Rows sit on grid axis 0, so B may exceed 65535. Traffic: x and a read
once, y written once. Accumulation is float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl


@triton.jit
def _compose(a1, x1, a2, x2):
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _linear_scan_kernel(
    x_ptr,
    a_ptr,
    c_ptr,
    y_ptr,
    B,
    T,
    stride_b,
    stride_t,
    REVERSE: tl.constexpr,
    ACC_FP64: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    acc_ty = tl.float64 if ACC_FP64 else tl.float32
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    h = tl.load(c_ptr + rows, mask=row_ok, other=0.0).to(acc_ty)
    steps = tl.arange(0, BLOCK_T)
    last = steps == BLOCK_T - 1
    for start in range(0, T, BLOCK_T):
        s = start + steps
        if REVERSE:
            t = T - 1 - s
        else:
            t = s
        mask = row_ok[:, None] & (s < T)[None, :]
        offs = rows[:, None] * stride_b + t[None, :].to(tl.int64) * stride_t
        # Padding steps are identity maps (a = 1, x = 0): the last column then holds the carry.
        a = tl.load(a_ptr + offs, mask=mask, other=1.0).to(acc_ty)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
        A, X = tl.associative_scan((a, x), 1, _compose)
        y = A * h[:, None] + X
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        h = tl.sum(tl.where(last[None, :], y, 0.0), axis=1)


def _blocks(B: int, T: int, time_major: bool, dtype: torch.dtype) -> tuple[int, int]:
    # A [block_b, block_t] tile of 4096 values accumulated in fp32 (16-bit inputs too), 2048 in fp64:
    # a 4096-element fp64 scan spills registers on sm_80 and sm_90 (see tests/triton_aot.py).
    tile = 2048 if dtype == torch.float64 else 4096
    if time_major:  # rows are contiguous along b: wide in b, short in t
        block_b = min(triton.next_power_of_2(B), 256)
        block_t = max(1, min(triton.next_power_of_2(T), tile // block_b))
    else:  # rows are contiguous along t
        block_t = min(triton.next_power_of_2(T), 1024, tile)
        block_b = max(1, min(triton.next_power_of_2(B), tile // block_t))
    return block_b, block_t


def linear_scan_triton(
    x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor, reverse: bool, time_major: bool = False
) -> torch.Tensor:
    """Launch the Triton scan on contiguous [B, T] (or time-major [T, B]) x/a and [B] carry
    (validated by the caller)."""
    T, B = x.shape if time_major else x.shape[::-1]
    stride_b, stride_t = (1, B) if time_major else (T, 1)
    y = torch.empty_like(x)
    block_b, block_t = _blocks(B, T, time_major, x.dtype)
    grid = (triton.cdiv(B, block_b),)
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _linear_scan_kernel[grid](
            x,
            a,
            carry,
            y,
            B,
            T,
            stride_b,
            stride_t,
            REVERSE=reverse,
            ACC_FP64=x.dtype == torch.float64,
            BLOCK_B=block_b,
            BLOCK_T=block_t,
        )
    return y
