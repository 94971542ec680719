"""Triton kernels of the softmax-policy log-prob ops (``metakern.ops.policy``), float32/float64.

Inputs come validated and viewed with a task dimension: tabular theta [N, S, A] with states,
actions [N, M]; linear weight [N, F, A], features [N, M, F], actions [N, M]. Formulas are those of
the ops' module docstring.

Sums over steps are deterministic, with no atomics: a task's M steps are cut into chunks whose
length depends only on the sizes; one program sums its chunk into registers in step order (a
one-hot tile reduction for the tabular bins: a [BLOCK_M, BLOCK_K] compare-and-sum per block of
steps, cheap for the small S*A of tabular policies) and writes one partial per chunk; torch then
sums the partials over chunks, in a fixed order. The O(S*A) per-row work (softmax of theta rows,
final assembly) is left to torch.

Grids: chunks or step blocks on axis 0; bin or feature tiles on axis 1; tasks on axis 2 (or 1), so
N is limited to 65535.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

_TILE = 4096  # 4-byte elements of the largest register tile (half as many of 8 bytes)
_TARGET_PROGRAMS = 1024  # programs to aim for when cutting steps into chunks


@triton.jit
def _tabular_fwd_kernel(theta_ptr, s_ptr, a_ptr, out_ptr, M, S, A, BLOCK_M: tl.constexpr, BLOCK_A: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    in_m = m < M
    s = tl.load(s_ptr + n * M + m, mask=in_m, other=0).to(tl.int64)
    a = tl.load(a_ptr + n * M + m, mask=in_m, other=0).to(tl.int64)
    ok = in_m & (s >= 0) & (s < S) & (a >= 0) & (a < A)
    cols = tl.arange(0, BLOCK_A)
    in_a = cols < A
    row = tl.load(theta_ptr + (n * S + s)[:, None] * A + cols[None, :], mask=ok[:, None] & in_a[None, :], other=0.0)
    z = tl.where(in_a[None, :], row, float("-inf"))
    mx = tl.max(z, axis=1)
    lse = mx + tl.log(tl.sum(tl.exp(z - mx[:, None]), axis=1))
    picked = tl.sum(tl.where(cols[None, :] == a[:, None], row, 0.0), axis=1)
    tl.store(out_ptr + n * M + m, tl.where(ok, picked - lse, float("nan")), mask=in_m)


@triton.jit
def _centered_gather_kernel(
    v_ptr, pv_ptr, s_ptr, a_ptr, out_ptr, M, S, A, BLOCK_M: tl.constexpr
):  # out = v[s, a] - pv[s]
    n = tl.program_id(1).to(tl.int64)
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    in_m = m < M
    s = tl.load(s_ptr + n * M + m, mask=in_m, other=0).to(tl.int64)
    a = tl.load(a_ptr + n * M + m, mask=in_m, other=0).to(tl.int64)
    ok = in_m & (s >= 0) & (s < S) & (a >= 0) & (a < A)
    val = tl.load(v_ptr + (n * S + s) * A + a, mask=ok, other=float("nan"))
    val -= tl.load(pv_ptr + n * S + s, mask=ok, other=0.0)
    tl.store(out_ptr + n * M + m, val, mask=in_m)


@triton.jit
def _histogram_kernel(
    w_ptr,
    s_ptr,
    a_ptr,
    out_ptr,
    M,
    S,
    A,
    K,
    CHUNK,
    num_chunks,
    BY_ACTION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[n, c, k] = sum of w[n, m] over the steps m of chunk c whose key (s*A + a, or s) is k."""
    c = tl.program_id(0)
    keys = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    n = tl.program_id(2).to(tl.int64)
    acc = tl.zeros([BLOCK_K], dtype=w_ptr.dtype.element_ty)
    m0 = c.to(tl.int64) * CHUNK
    for start in range(0, CHUNK, BLOCK_M):
        m = m0 + start + tl.arange(0, BLOCK_M)
        in_m = m < M
        s = tl.load(s_ptr + n * M + m, mask=in_m, other=-1).to(tl.int64)
        ok = in_m & (s >= 0) & (s < S)
        if BY_ACTION:
            a = tl.load(a_ptr + n * M + m, mask=in_m, other=0).to(tl.int64)
            ok = ok & (a >= 0) & (a < A)
            key = s * A + a
        else:
            key = s
        key = tl.where(ok, key, -1)
        w = tl.load(w_ptr + n * M + m, mask=in_m, other=0.0)
        acc += tl.sum(tl.where(key[:, None] == keys[None, :], w[:, None], 0.0), axis=0)
    tl.store(out_ptr + (n * num_chunks + c) * K + keys, acc, mask=keys < K)


@triton.jit
def _logits(z, x_ptr, w_ptr, row, in_m, n, F, A, cols, in_a, BLOCK_F: tl.constexpr):
    """z += x[row, :] @ w[n] over all of F, in tiles of BLOCK_F (x row-major [*, F], w [N, F, A])."""
    fs = tl.arange(0, BLOCK_F)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + fs
        in_f = f < F
        x = tl.load(x_ptr + row[:, None] * F + f[None, :], mask=in_m[:, None] & in_f[None, :], other=0.0)
        w = tl.load(w_ptr + (n * F + f)[:, None] * A + cols[None, :], mask=in_f[:, None] & in_a[None, :], other=0.0)
        z += tl.sum(x[:, :, None] * w[None, :, :], axis=1)
    return z


@triton.jit
def _softmax_rows(z, in_a):
    z = tl.where(in_a[None, :], z, float("-inf"))
    mx = tl.max(z, axis=1)
    e = tl.exp(z - mx[:, None])
    total = tl.sum(e, axis=1)
    return e / total[:, None], mx + tl.log(total)


@triton.jit
def _linear_fwd_kernel(
    w_ptr, x_ptr, a_ptr, out_ptr, M, F, A, BLOCK_M: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_A: tl.constexpr
):
    n = tl.program_id(1).to(tl.int64)
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    in_m = m < M
    cols = tl.arange(0, BLOCK_A)
    in_a = cols < A
    z = tl.zeros([BLOCK_M, BLOCK_A], dtype=x_ptr.dtype.element_ty)
    z = _logits(z, x_ptr, w_ptr, n * M + m, in_m, n, F, A, cols, in_a, BLOCK_F)
    a = tl.load(a_ptr + n * M + m, mask=in_m, other=0).to(tl.int64)
    ok = in_m & (a >= 0) & (a < A)
    _, lse = _softmax_rows(z, in_a)
    picked = tl.sum(tl.where(cols[None, :] == a[:, None], z, 0.0), axis=1)
    tl.store(out_ptr + n * M + m, tl.where(ok, picked - lse, float("nan")), mask=in_m)


@triton.jit
def _linear_bwd_kernel(
    gl_ptr,
    w_ptr,
    x_ptr,
    a_ptr,
    vw_ptr,
    vx_ptr,
    u_ptr,
    dw_ptr,
    dx_ptr,
    M,
    F,
    A,
    CHUNK,
    num_chunks,
    SECOND: tl.constexpr,
    HAS_VW: tl.constexpr,
    HAS_VX: tl.constexpr,
    NEED_U: tl.constexpr,
    NEED_W: tl.constexpr,
    NEED_X: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_A: tl.constexpr,
):
    """Backward (SECOND = False): c = gl (e_a - pi); dw partial += x^T c, dx = c w^T.
    Double backward (SECOND = True), y = x vw + vx w: u = y[a] - <pi, y>, q = -gl pi (y - <pi, y>);
    dw partial += x^T q + vx^T c, dx = q w^T + c vw^T. Program (chunk, feature tile, task); dw
    partials are [N, num_chunks, F, A]; u is written by the programs of feature tile 0."""
    c = tl.program_id(0)
    ft = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    cols = tl.arange(0, BLOCK_A)
    in_a = cols < A
    f = ft * BLOCK_F + tl.arange(0, BLOCK_F)
    in_f = f < F
    w_tile = tl.load(w_ptr + (n * F + f)[:, None] * A + cols[None, :], mask=in_f[:, None] & in_a[None, :], other=0.0)
    if SECOND:
        if HAS_VW:
            vw_tile = tl.load(
                vw_ptr + (n * F + f)[:, None] * A + cols[None, :], mask=in_f[:, None] & in_a[None, :], other=0.0
            )
    acc = tl.zeros([BLOCK_F, BLOCK_A], dtype=x_ptr.dtype.element_ty)
    m0 = c.to(tl.int64) * CHUNK
    for start in range(0, CHUNK, BLOCK_M):
        m = m0 + start + tl.arange(0, BLOCK_M)
        in_m = m < M
        row = n * M + m
        z = tl.zeros([BLOCK_M, BLOCK_A], dtype=x_ptr.dtype.element_ty)
        z = _logits(z, x_ptr, w_ptr, row, in_m, n, F, A, cols, in_a, BLOCK_F)
        p, _ = _softmax_rows(z, in_a)
        a = tl.load(a_ptr + row, mask=in_m, other=0).to(tl.int64)
        ok = in_m & (a >= 0) & (a < A)
        live = ok[:, None] & in_a[None, :]
        g = tl.load(gl_ptr + row, mask=in_m, other=0.0)
        onehot = tl.where(cols[None, :] == a[:, None], 1.0, 0.0)
        cv = tl.where(live, g[:, None] * (onehot - p), 0.0)  # gl (e_a - pi)
        x_tile = tl.load(x_ptr + row[:, None] * F + f[None, :], mask=in_m[:, None] & in_f[None, :], other=0.0)
        if SECOND:
            y = tl.zeros([BLOCK_M, BLOCK_A], dtype=x_ptr.dtype.element_ty)
            if HAS_VW:
                y = _logits(y, x_ptr, vw_ptr, row, in_m, n, F, A, cols, in_a, BLOCK_F)
            if HAS_VX:
                y = _logits(y, vx_ptr, w_ptr, row, in_m, n, F, A, cols, in_a, BLOCK_F)
            py = tl.sum(tl.where(live, p * y, 0.0), axis=1)
            if NEED_U:
                u = tl.sum(tl.where(cols[None, :] == a[:, None], y, 0.0), axis=1) - py
                tl.store(u_ptr + row, tl.where(ok, u, float("nan")), mask=in_m & ((m * 0 + ft) == 0))
            q = tl.where(live, -g[:, None] * p * (y - py[:, None]), 0.0)
            if NEED_X:
                dx = tl.sum(q[:, None, :] * w_tile[None, :, :], axis=2)
                if HAS_VW:
                    dx += tl.sum(cv[:, None, :] * vw_tile[None, :, :], axis=2)
                dx = tl.where(ok[:, None], dx, float("nan"))
                tl.store(dx_ptr + row[:, None] * F + f[None, :], dx, mask=in_m[:, None] & in_f[None, :])
            if NEED_W:
                acc += tl.sum(x_tile[:, :, None] * q[:, None, :], axis=0)
                if HAS_VX:
                    vx_tile = tl.load(
                        vx_ptr + row[:, None] * F + f[None, :], mask=in_m[:, None] & in_f[None, :], other=0.0
                    )
                    acc += tl.sum(vx_tile[:, :, None] * cv[:, None, :], axis=0)
        else:
            if NEED_X:
                dx = tl.sum(cv[:, None, :] * w_tile[None, :, :], axis=2)
                dx = tl.where(ok[:, None], dx, float("nan"))
                tl.store(dx_ptr + row[:, None] * F + f[None, :], dx, mask=in_m[:, None] & in_f[None, :])
            if NEED_W:
                acc += tl.sum(x_tile[:, :, None] * cv[:, None, :], axis=0)
    if NEED_W:
        out = dw_ptr + ((n * num_chunks + c) * F + f)[:, None] * A + cols[None, :]
        tl.store(out, acc, mask=in_f[:, None] & in_a[None, :])


# --------------------------------------------------------------------------------------------------
# Launchers


def _device(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _chunks(M: int, block_m: int, other_programs: int) -> tuple[int, int]:
    """(chunk length, number of chunks): a multiple of block_m, from the sizes only (deterministic)."""
    blocks = triton.cdiv(M, block_m)
    want = max(1, min(blocks, triton.cdiv(_TARGET_PROGRAMS, other_programs)))
    chunk = block_m * triton.cdiv(blocks, want)
    return chunk, triton.cdiv(M, chunk)


def _tile(dtype: torch.dtype) -> int:
    """Elements of the largest register tile: ``_TILE`` 4-byte values, or as many bytes of wider ones.
    (With the 64-bit addresses of a gathered tile, a 4096-element fp64 tile spills registers on
    sm_90 at 4 warps; ``tests/triton_aot.py`` checks that none of these kernels spill.)"""
    return _TILE * 4 // dtype.itemsize


def _step_grid(M: int, N: int, block_m: int) -> tuple[int, int]:
    return (triton.cdiv(M, block_m), N)


def tabular_log_prob_triton(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """l [N, M] = log_softmax(theta[n, s])[a]."""
    N, S, A = theta.shape
    M = states.shape[1]
    out = theta.new_empty(N, M)
    block_a = triton.next_power_of_2(A)
    block_m = max(16, min(1024, _tile(theta.dtype) // block_a))
    with _device(theta):
        _tabular_fwd_kernel[_step_grid(M, N, block_m)](
            theta, states, actions, out, M, S, A, BLOCK_M=block_m, BLOCK_A=block_a
        )
    return out


def _histogram(w: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, S: int, A: int, by_action: bool):
    """[N, K] per-key sums of w (K = S*A keys s*A + a, or S keys s), deterministic."""
    N, M = states.shape
    K = S * A if by_action else S
    block_k = min(triton.next_power_of_2(K), 128)
    block_m = max(16, _tile(w.dtype) // block_k)
    k_tiles = triton.cdiv(K, block_k)
    chunk, num_chunks = _chunks(M, block_m, N * k_tiles)
    partial = w.new_empty(N, num_chunks, K)
    with _device(w):
        _histogram_kernel[(num_chunks, k_tiles, N)](
            w, states, actions, partial, M, S, A, K, chunk, num_chunks,
            BY_ACTION=by_action, BLOCK_M=block_m, BLOCK_K=block_k,
        )  # fmt: skip
    return partial.sum(1)


def tabular_log_prob_backward_triton(gl, theta, states, actions) -> torch.Tensor:
    """grad_theta [N, S, A] = per-(s, a) sums of gl minus pi_s times their per-state sums."""
    N, S, A = theta.shape
    at = _histogram(gl, states, actions, S, A, True).reshape(N, S, A)
    return at - torch.softmax(theta, dim=-1) * at.sum(-1, keepdim=True)


def tabular_log_prob_double_backward_triton(gl, theta, states, actions, v, need_gl: bool, need_theta: bool):
    """(u [N, M] or None, d_theta [N, S, A] or None)."""
    N, S, A = theta.shape
    M = states.shape[1]
    pi = torch.softmax(theta, dim=-1)
    pv = (pi * v).sum(-1)  # [N, S]
    u = dth = None
    if need_gl:
        u = gl.new_empty(N, M)
        block_m = 1024
        with _device(gl):
            _centered_gather_kernel[_step_grid(M, N, block_m)](v, pv, states, actions, u, M, S, A, BLOCK_M=block_m)
    if need_theta:
        visits = _histogram(gl, states, actions, S, A, False)  # [N, S]
        dth = -visits.unsqueeze(-1) * pi * (v - pv.unsqueeze(-1))
    return u, dth


def _linear_blocks(F: int, A: int, dtype: torch.dtype) -> tuple[int, int, int]:
    tile = _tile(dtype)
    block_a = triton.next_power_of_2(A)
    block_f = max(1, min(triton.next_power_of_2(F), 32, tile // block_a))
    block_m = max(1, min(128, tile // (block_f * block_a)))
    return block_m, block_f, block_a


def linear_softmax_log_prob_triton(weight, features, actions) -> torch.Tensor:
    """l [N, M] = log_softmax(features[n, m] @ weight[n])[a]."""
    N, F, A = weight.shape
    M = actions.shape[1]
    out = weight.new_empty(N, M)
    block_m, block_f, block_a = _linear_blocks(F, A, weight.dtype)
    with _device(weight):
        _linear_fwd_kernel[_step_grid(M, N, block_m)](
            weight, features, actions, out, M, F, A, BLOCK_M=block_m, BLOCK_F=block_f, BLOCK_A=block_a
        )
    return out


def _linear_backward(gl, weight, features, actions, vw, vx, second, need_u, need_w, need_x):
    N, F, A = weight.shape
    M = actions.shape[1]
    block_m, block_f, block_a = _linear_blocks(F, A, weight.dtype)
    f_tiles = triton.cdiv(F, block_f)
    chunk, num_chunks = _chunks(M, block_m, N * f_tiles)
    u = gl.new_empty(N, M) if need_u else None
    partial = weight.new_empty(N, num_chunks, F, A) if need_w else None
    dx = torch.empty_like(features) if need_x else None
    dummy = gl  # never read or written: its pointer stands for an absent tensor
    with _device(weight):
        _linear_bwd_kernel[(num_chunks, f_tiles, N)](
            gl, weight, features, actions,
            vw if vw is not None else dummy, vx if vx is not None else dummy,
            u if need_u else dummy, partial if need_w else dummy, dx if need_x else dummy,
            M, F, A, chunk, num_chunks,
            SECOND=second, HAS_VW=vw is not None, HAS_VX=vx is not None,
            NEED_U=need_u, NEED_W=need_w, NEED_X=need_x,
            BLOCK_M=block_m, BLOCK_F=block_f, BLOCK_A=block_a,
        )  # fmt: skip
    return u, (partial.sum(1) if need_w else None), dx


def linear_softmax_log_prob_backward_triton(gl, weight, features, actions, need_w: bool, need_x: bool):
    """(grad_weight [N, F, A] or None, grad_features [N, M, F] or None)."""
    _, gw, gx = _linear_backward(gl, weight, features, actions, None, None, False, False, need_w, need_x)
    return gw, gx


def linear_softmax_log_prob_double_backward_triton(
    gl, weight, features, actions, vw, vx, need_gl: bool, need_w: bool, need_x: bool
):
    """(u [N, M], d_weight [N, F, A], d_features [N, M, F]), each None when not needed; vw / vx may
    be None (zero cotangents)."""
    return _linear_backward(gl, weight, features, actions, vw, vx, True, need_gl, need_w, need_x)
