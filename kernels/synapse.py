"""Triton kernels of the MetODS dynamic-synapse op (``metakern.ops.synapse``): forward and backward.

Math (closed form of Algorithm 1, ``cpp/synapse/metods.h``; gamma [S+1], coef [S+1, S] from
``synapse_coefficients``). Per sequence b and step t, W_in = W0 at t = 0 or where reset[b, t], else
the previous W_out; v_0 = v0[b, t]; for s = 1..S

    p_s = gamma[s-1] W_in v_{s-1} + sum_{j<s-1} coef[s-1, j] v_j * (alpha (v_j * v_{s-1}))
    v_s = sum_{l<s} kappa[s-1, l] v_l + kappa[s-1, s] sigma(p_s)
    W_out = gamma[S] W_in + alpha * sum_{j<S} coef[S, j] v_j v_j^T

and the step emits v_S. The backward is the adjoint written out in ``metods_closed_form_backward``
(write-term gradients, inner steps s = S..1, then the alpha / W_in updates), step by step in reverse.

Grid: (B,), one program per sequence, batch on grid axis 0 (B may exceed 65535). A read reduces over
all of W's columns and the next inner step needs the whole new vector, so a sequence cannot be split
across programs without a global exchange every inner step; the time loop is sequential anyway.

Forward on chip (N <= ``MAX_ON_CHIP_N`` = 128): W is a [BN, BN] register tile (BN = next_pow2(N),
masked; 64 KB of fp32 at N = 128) carried through the whole time loop, and alpha is loaded once per
program. N, S and the flags are compile-time constants: a thread's tile addresses are then a base
plus immediates (a runtime N costs a register per element), and the inner steps are unrolled, with
the S + 1 vectors v_0..v_S of a step held in a tuple. The read W x is ``tl.sum(W * x[None, :], 1)``
with the alpha terms folded into the same reduction; the write is one elementwise pass. Every outer
product is formed as (tile * a[:, None]) * b[None, :]: one built from two vectors alone may be laid
out differently from W and then costs a whole-tile layout conversion through shared memory. The
forward stores v_S every step and, when saving, v_1..v_S and p_1..p_S every step and W_in of every
C-th step into ckpt ([B, K, N, N], K = ceil(T/C) - 1; step 0's is W0).

Backward on chip (N <= ``MAX_ON_CHIP_N_BACKWARD`` = 64): the program carries dW (the gradient w.r.t.
the current W_out) and its dalpha partial in registers and loads each step's W_in and alpha: four
N x N tiles, which at N = 128 would fill the whole register file of an SM (64 K fp32), hence the
lower limit. Each segment of C steps is done in reverse: W_in at every C2-th step of the segment is
recomputed from the segment's checkpoint into a per-program scratch ``sub``, then, sub-segment by
sub-segment, the W_in of its steps into a scratch ``seg``, and the adjoint of those steps runs in
reverse (``metods_closed_form_backward``'s order), loading each W_in once. C2 = C (one recompute
pass) up to C = ``ONE_PASS_MAX_C`` = 64, else ceil(sqrt(C)) (two passes), the C++ kernel's rule:
scratch per sequence (ceil(C/C2) + C2) N^2 values, as ``memory_model_bytes`` counts per worker, plus
the N^2 partials of dalpha and dW0 (three more N^2 buffers on the streaming path). On a GPU every
sequence's scratch is live at once; a smaller ONE_PASS_MAX_C trades a second recompute pass for less
of it. The write is elementwise in W, so the recompute carries row blocks
(``RECOMPUTE_TILE`` elements, so as not to add two full tiles to dW and dalpha) through time in
registers, with no barrier per step.

Streaming path (N above those limits): the same algorithm with every N x N matrix in global memory
(W in WT itself, dW and dalpha in per-sequence buffers), visited in [BR, BN] row blocks
(BR * BN <= ``STREAM_TILE``). Reductions along columns (a W^T y) accumulate in full-length register
vectors across blocks; reductions along rows (W x) produce a block of a vector at a time and go
through a per-sequence global vector buffer, and a block's rows of a register vector are read back
from global memory. ``tl.debug_barrier`` orders those round trips between the program's threads.
Traffic per inner step is a few N^2 loads from L2 instead of registers: correct and slower. The
backward of 64 < N <= 128 runs this way on the forward's saved tensors (the layout is shared).

Determinism: no atomics. Shared gradients (dalpha, dkappa, dgamma, dcoef and dW0 of a shared W0)
are written as per-sequence partials [B, ...] and summed over B by torch (a fixed-shape reduction).

Numerics: fp32 state and accumulators (fp64 for fp64 inputs; callers pass the compute dtype). tanh
is an odd Taylor polynomial near 0 and 1 - 2/(exp(2|x|) + 1) above (``tl`` has no tanh and the
interpreter has no libdevice); a few ulps in either dtype.

Cost per step and sequence: forward about (S + 3) S / 2 + S + 2 multiply-adds per N x N element; the
backward about three times that plus one recompute write (two for C > ONE_PASS_MAX_C).

Launch configuration (``_num_warps``) was chosen from the compiled sm_90 kernels' register use, not
by timing: no GPU was at hand. ``tests/triton_aot.py`` compiles every launch for sm_80, sm_90 and
sm_100 and reports registers and spills per thread; CI (sm_90) fails if a kernel spills where this
list does not say so. With Triton 3.9's compiler, fp32 at S <= 2 spills nowhere except the on-chip forward at
N = 128 (BN = 128: up to 210 bytes per thread; 400 to 530 at S = 4, at 16 or 32 warps alike). S >= 3
and fp64 may spill: the on-chip backward at BN = 64 and S >= 3 (4 to 150 bytes in fp32), fp64 from
N = 64 at any S and from N = 16 at S >= 3 (up to about 10 KB per thread in the N = 128 forward).
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl

MAX_ON_CHIP_N = 128  # largest N whose forward keeps W in registers (the tests lower it)
MAX_ON_CHIP_N_BACKWARD = 64  # largest N whose backward keeps dW in registers (the tests lower it)
STREAM_TILE = 4096  # elements of one [BR, BN] row block of the streaming path (the tests lower it)
RECOMPUTE_TILE = 2048  # elements of one row block of the on-chip backward's recompute
ONE_PASS_MAX_C = 64  # longest checkpoint segment recomputed in one pass (as the C++ kernel)


# --------------------------------------------------------------------------------------------------
# Elementwise helpers


@triton.jit
def _tanh(x, SMALL: tl.constexpr):
    # Odd Taylor series to x^11 below SMALL (0.25 for fp32, 0.0625 for fp64: the x^13 term is then
    # below the dtype's rounding), where 1 - 2/(e + 1) would lose relative precision.
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    a2 = a * a
    poly = a * (
        1.0
        + a2
        * (
            -0.33333333333333333
            + a2
            * (
                0.13333333333333333
                + a2 * (-0.053968253968253971 + a2 * (0.021869488536155203 + a2 * -0.0088632355299021973))
            )
        )
    )
    y = tl.where(a < SMALL, poly, big)
    return tl.where(x < 0.0, -y, y)


@triton.jit
def _act(p, ACT: tl.constexpr, TANH_SMALL: tl.constexpr):
    if ACT == 0:
        h = _tanh(p, TANH_SMALL)
    elif ACT == 1:
        h = tl.where(p > 0.0, p, 0.0)
    else:
        h = p
    return h


@triton.jit
def _act_grad_mul(p, h, d, ACT: tl.constexpr):
    """d * sigma'(p), given h = sigma(p)."""
    if ACT == 0:
        g = d * (1.0 - h * h)
    elif ACT == 1:
        g = d * tl.where(p > 0.0, 1.0, 0.0)
    else:
        g = d
    return g


@triton.jit
def _row(X, idx, j):
    """Row j of a small register tile X (a masked sum: register tiles cannot be indexed)."""
    return tl.sum(tl.where(idx[:, None] == j, X, 0.0), axis=0)


@triton.jit
def _add_row(X, idx, j, v):
    return X + tl.where(idx[:, None] == j, v[None, :], 0.0)


@triton.jit
def _append(t, v):
    """Tuples of vectors hold a step's vectors in registers, unrolled at compile time."""
    return t + (v,)  # noqa: RUF005 (Triton's frontend has no starred expressions)


@triton.jit
def _set(t, j: tl.constexpr, val):
    """The tuple t with entry j replaced by val."""
    out = ()
    for k in tl.static_range(len(t)):
        if k == j:
            out = _append(out, val)
        else:
            out = _append(out, t[k])
    return out


@triton.jit
def _vec(v0_bt, vs_bt, j: tl.constexpr, idx, msk, N):
    """Entries idx of v_j of one step, from global memory: v_0 from v0, v_1..v_S from vs."""
    if j == 0:
        out = tl.load(v0_bt + idx, mask=msk, other=0.0)
    else:
        out = tl.load(vs_bt + (j - 1) * N + idx, mask=msk, other=0.0)
    return out


@triton.jit
def _resets(reset_ptr, b, T, t, HAS_RESET: tl.constexpr):
    """Whether W returns to W0 before step t (t = 0 starts from W0 anyway)."""
    if HAS_RESET:
        r = (tl.load(reset_ptr + b * T + t) != 0) & (t > 0)
    else:
        r = t < 0
    return r


@triton.jit
def _written(Wb, Ab, v0_bt, vs_bt, rows, rm, cols, cm, coef_ptr, gS, N, S: tl.constexpr):
    """Rows `rows` of W_out = gamma[S] W_in + alpha * sum_j coef[S, j] v_j v_j^T, vectors from global."""
    Z = tl.zeros_like(Wb)
    for j in tl.static_range(S):
        vr = _vec(v0_bt, vs_bt, j, rows, rm, N)
        vc = _vec(v0_bt, vs_bt, j, cols, cm, N)
        Z += (tl.load(coef_ptr + S * S + j) * vr)[:, None] * vc[None, :]
    return gS * Wb + Ab * Z


@triton.jit
def _recompute(
    src,
    dst,
    t_first,
    n,
    stride,
    b,
    T,
    N,
    v0_ptr,
    vs_ptr,
    w0_b,
    alpha_ptr,
    gamma_ptr,
    coef_ptr,
    reset_ptr,
    S: tl.constexpr,
    BR: tl.constexpr,
    BN: tl.constexpr,
    HAS_RESET: tl.constexpr,
):
    """dst[k // stride] = W_in of step t_first + k for k = 0, stride, 2 stride, ... < n, given
    src = W_in of step t_first. The write is elementwise in W, so each row block is carried through
    all n steps in registers: no exchange between threads, no barrier per step."""
    NN = tl.full([], N, tl.int64) * N  # int64: offsets k * NN must not wrap
    ri = tl.arange(0, BR)
    cols = tl.arange(0, BN)
    cm = cols < N
    gS = tl.load(gamma_ptr + S)
    for r0 in range(0, N, BR):
        rows = r0 + ri
        rm = rows < N
        m2 = rm[:, None] & cm[None, :]
        off = rows[:, None] * N + cols[None, :]
        Wb = tl.load(src + off, mask=m2, other=0.0)
        Ab = tl.load(alpha_ptr + off, mask=m2, other=0.0)
        for k in range(n):
            if k % stride == 0:
                tl.store(dst + (k // stride) * NN + off, Wb, mask=m2)
            if k + 1 < n:
                t = t_first + k
                bt = b * T + t
                Wb = _written(Wb, Ab, v0_ptr + bt * N, vs_ptr + bt * S * N, rows, rm, cols, cm, coef_ptr, gS, N, S)
                if _resets(reset_ptr, b, T, t + 1, HAS_RESET):
                    Wb = tl.load(w0_b + off, mask=m2, other=0.0)


# Pieces of the streaming backward: they take the reductions over N x N and do the O(S N) rest.
# Its vectors are small register tiles, since they are carried across runtime loops over row blocks:
# V [SP1, BN] rows v_0..v_S; P, Yt, Zt, At, Bt [SP, BN]; dV [SP1, BN]. Both backward kernels keep the
# scalar gradients in dK [SP, SP1] (dkappa), dG [SP1] (dgamma), dC [SP1, SP] (dcoef).


@triton.jit
def _write_term_post(Yt, Zt, V, dV, dC, sidx, pidx, coef_ptr, S: tl.constexpr):
    """With y_j = (alpha * dW) v_j, z_j = (alpha * dW)^T v_j: dcoef[S, j] and dv_j of the write."""
    for j in tl.static_range(S):
        vj = _row(V, sidx, j)
        y = _row(Yt, pidx, j)
        z = _row(Zt, pidx, j)
        dC += tl.where((sidx[:, None] == S) & (pidx[None, :] == j), tl.sum(vj * y, axis=0), 0.0)
        dV = _add_row(dV, sidx, j, tl.load(coef_ptr + S * S + j) * (y + z))
    return dV, dC


@triton.jit
def _inner_pre(
    s: tl.constexpr, V, P, dV, dK, sidx, pidx, kappa_ptr, S: tl.constexpr, ACT: tl.constexpr, TANH_SMALL: tl.constexpr
):
    """Inner step s through v_s = sum_l kappa v_l + kappa[s-1, s] sigma(p_s): dkappa, dv_l, dp_s."""
    ps = _row(P, pidx, s - 1)
    h = _act(ps, ACT, TANH_SMALL)
    dvs = _row(dV, sidx, s)
    kbase = kappa_ptr + (s - 1) * (S + 1)
    krow = tl.load(kbase + sidx, mask=sidx < s, other=0.0)
    kv = tl.where(sidx < s, tl.sum(V * dvs[None, :], axis=1), 0.0)
    kv += tl.where(sidx == s, tl.sum(dvs * h, axis=0), 0.0)
    dK += tl.where(pidx[:, None] == s - 1, kv[None, :], 0.0)
    dV += tl.where(sidx[:, None] < s, krow[:, None] * dvs[None, :], 0.0)
    dp = _act_grad_mul(ps, h, tl.load(kbase + s) * dvs, ACT)
    return dV, dK, dp


@triton.jit
def _inner_post(s: tl.constexpr, r, At, Bt, dp, V, dV, dG, dC, sidx, pidx, gamma_ptr, coef_ptr, S: tl.constexpr):
    """The read p_s, given r = W_in^T dp, a_j = alpha (v_j * x), b_j = alpha^T (v_j * dp) (x = v_{s-1})."""
    x = _row(V, sidx, s - 1)
    dx = tl.load(gamma_ptr + s - 1) * r
    dG += tl.where(sidx == s - 1, tl.sum(r * x, axis=0), 0.0)
    if s >= 2:
        for j in tl.static_range(s - 1):
            c = tl.load(coef_ptr + (s - 1) * S + j)
            vj = _row(V, sidx, j)
            a = _row(At, pidx, j)
            bb = _row(Bt, pidx, j)
            dC += tl.where((sidx[:, None] == s - 1) & (pidx[None, :] == j), tl.sum(dp * vj * a, axis=0), 0.0)
            dV = _add_row(dV, sidx, j, c * (dp * a + x * bb))
            dx += c * vj * bb
    dV = _add_row(dV, sidx, s - 1, dx)
    return dV, dG, dC


@triton.jit
def _load_step(v0_ptr, vs_ptr, ps_ptr, gvS_ptr, bt, N, i, im, sidx, pidx, S: tl.constexpr):
    """V = v_0..v_S, P = p_1..p_S of step bt, and dV with row S = dL/dv_S."""
    vmask = (sidx[:, None] >= 1) & (sidx[:, None] <= S) & im[None, :]
    V = tl.load(vs_ptr + (bt * S + sidx[:, None] - 1) * N + i[None, :], mask=vmask, other=0.0)
    V = _add_row(V, sidx, 0, tl.load(v0_ptr + bt * N + i, mask=im, other=0.0))
    pmask = (pidx[:, None] < S) & im[None, :]
    P = tl.load(ps_ptr + (bt * S + pidx[:, None]) * N + i[None, :], mask=pmask, other=0.0)
    dV = _add_row(tl.zeros_like(V), sidx, S, tl.load(gvS_ptr + bt * N + i, mask=im, other=0.0))
    return V, P, dV


@triton.jit
def _store_scalar_grads(dK, dG, dC, dkappa_ptr, dgamma_ptr, dcoef_ptr, b, sidx, pidx, S: tl.constexpr):
    base = b * S * (S + 1)
    tl.store(
        dkappa_ptr + base + pidx[:, None] * (S + 1) + sidx[None, :],
        dK,
        mask=(pidx[:, None] < S) & (sidx[None, :] <= S),
    )
    tl.store(dgamma_ptr + b * (S + 1) + sidx, dG, mask=sidx <= S)
    tl.store(dcoef_ptr + base + sidx[:, None] * S + pidx[None, :], dC, mask=(sidx[:, None] <= S) & (pidx[None, :] < S))


# --------------------------------------------------------------------------------------------------
# Forward


@triton.jit
def _fwd_onchip_kernel(
    v0_ptr,
    w0_ptr,
    alpha_ptr,
    kappa_ptr,
    gamma_ptr,
    coef_ptr,
    reset_ptr,
    vS_ptr,
    wT_ptr,
    vs_ptr,
    ps_ptr,
    ckpt_ptr,
    T,
    N: tl.constexpr,
    C,
    K_CK,
    S: tl.constexpr,
    BN: tl.constexpr,
    ACT: tl.constexpr,
    TANH_SMALL: tl.constexpr,
    W0_BATCHED: tl.constexpr,
    HAS_RESET: tl.constexpr,
    SAVE: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    NN = N * N
    i = tl.arange(0, BN)
    im = i < N
    tile = i[:, None] * N + i[None, :]
    tmask = im[:, None] & im[None, :]
    w0_b = w0_ptr + (b * NN if W0_BATCHED else 0)
    # Padding rows and columns hold zeros in W, alpha and every vector (sigma(0) = 0), so they stay 0.
    A = tl.load(alpha_ptr + tile, mask=tmask, other=0.0)
    W = tl.load(w0_b + tile, mask=tmask, other=0.0)
    gS = tl.load(gamma_ptr + S)
    for t in range(T):
        if _resets(reset_ptr, b, T, t, HAS_RESET):
            W = tl.load(w0_b + tile, mask=tmask, other=0.0)
        if SAVE:
            if (t % C == 0) & (t > 0):
                tl.store(ckpt_ptr + (b * K_CK + t // C - 1) * NN + tile, W, mask=tmask)
        bt = b * T + t
        x = tl.load(v0_ptr + bt * N + i, mask=im, other=0.0)
        vs = (x,)  # v_0..v_s: a tuple of vectors, unrolled at compile time
        for s in tl.static_range(1, S + 1):
            acc = tl.load(gamma_ptr + s - 1) * W * x[None, :]
            # sum_j coef v_j * (alpha (v_j * x)) folded into the same row reduction. Each outer product
            # multiplies a tile first: one built from vectors alone can take another layout and cost
            # a whole-tile layout conversion where it meets W.
            for j in tl.static_range(s - 1):
                acc += (A * (tl.load(coef_ptr + (s - 1) * S + j) * vs[j])[:, None]) * (vs[j] * x)[None, :]
            p = tl.sum(acc, axis=1)
            kbase = kappa_ptr + (s - 1) * (S + 1)
            v = tl.load(kbase + s) * _act(p, ACT, TANH_SMALL)
            for l in tl.static_range(s):
                v += tl.load(kbase + l) * vs[l]
            vs = _append(vs, v)
            if SAVE:
                tl.store(vs_ptr + (bt * S + s - 1) * N + i, v, mask=im)
                tl.store(ps_ptr + (bt * S + s - 1) * N + i, p, mask=im)
            x = v
        tl.store(vS_ptr + bt * N + i, x, mask=im)
        W = gS * W
        for j in tl.static_range(S):
            W += (A * (tl.load(coef_ptr + S * S + j) * vs[j])[:, None]) * vs[j][None, :]
    tl.store(wT_ptr + b * NN + tile, W, mask=tmask)


@triton.jit
def _copy_rows(src, dst, N, ri, cols, cm, BR: tl.constexpr):
    for r0 in range(0, N, BR):
        rows = r0 + ri
        m2 = (rows < N)[:, None] & cm[None, :]
        off = rows[:, None] * N + cols[None, :]
        tl.store(dst + off, tl.load(src + off, mask=m2, other=0.0), mask=m2)


@triton.jit
def _fwd_stream_kernel(
    v0_ptr,
    w0_ptr,
    alpha_ptr,
    kappa_ptr,
    gamma_ptr,
    coef_ptr,
    reset_ptr,
    vS_ptr,
    wT_ptr,
    vs_ptr,
    ps_ptr,
    ckpt_ptr,
    vbuf_ptr,
    T,
    N,
    C,
    K_CK,
    S: tl.constexpr,
    BR: tl.constexpr,
    BN: tl.constexpr,
    ACT: tl.constexpr,
    TANH_SMALL: tl.constexpr,
    W0_BATCHED: tl.constexpr,
    HAS_RESET: tl.constexpr,
    SAVE: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    NN = N * N
    ri = tl.arange(0, BR)
    cols = tl.arange(0, BN)
    cm = cols < N
    w0_b = w0_ptr + (b * NN if W0_BATCHED else 0)
    W_b = wT_ptr + b * NN  # the working matrix: W_T when the loop ends
    gS = tl.load(gamma_ptr + S)
    _copy_rows(w0_b, W_b, N, ri, cols, cm, BR)
    tl.debug_barrier()
    for t in range(T):
        if _resets(reset_ptr, b, T, t, HAS_RESET):
            _copy_rows(w0_b, W_b, N, ri, cols, cm, BR)
            tl.debug_barrier()
        if SAVE:
            if (t % C == 0) & (t > 0):
                _copy_rows(W_b, ckpt_ptr + (b * K_CK + t // C - 1) * NN, N, ri, cols, cm, BR)
        bt = b * T + t
        v0_bt = v0_ptr + bt * N
        # v_1..v_S of the step: the saved vs when saving, else a per-sequence buffer.
        vb = vs_ptr + bt * S * N if SAVE else vbuf_ptr + b * S * N
        for s in tl.static_range(1, S + 1):
            x = _vec(v0_bt, vb, s - 1, cols, cm, N)
            kbase = kappa_ptr + (s - 1) * (S + 1)
            for r0 in range(0, N, BR):
                rows = r0 + ri
                rm = rows < N
                m2 = rm[:, None] & cm[None, :]
                off = rows[:, None] * N + cols[None, :]
                acc = tl.load(gamma_ptr + s - 1) * tl.load(W_b + off, mask=m2, other=0.0) * x[None, :]
                if s >= 2:
                    Z = tl.zeros_like(acc)
                    for j in tl.static_range(s - 1):
                        vr = _vec(v0_bt, vb, j, rows, rm, N)
                        vc = _vec(v0_bt, vb, j, cols, cm, N)
                        Z += (tl.load(coef_ptr + (s - 1) * S + j) * vr)[:, None] * (vc * x)[None, :]
                    acc += tl.load(alpha_ptr + off, mask=m2, other=0.0) * Z
                p = tl.sum(acc, axis=1)
                # v_s is elementwise in p_s: each block finishes its rows of v_s.
                v = tl.load(kbase + s) * _act(p, ACT, TANH_SMALL)
                for l in tl.static_range(s):
                    v += tl.load(kbase + l) * _vec(v0_bt, vb, l, rows, rm, N)
                tl.store(vb + (s - 1) * N + rows, v, mask=rm)
                if SAVE:
                    tl.store(ps_ptr + (bt * S + s - 1) * N + rows, p, mask=rm)
                if s == S:
                    tl.store(vS_ptr + bt * N + rows, v, mask=rm)
            tl.debug_barrier()  # v_s complete before the next read uses all of it
        for r0 in range(0, N, BR):
            rows = r0 + ri
            rm = rows < N
            m2 = rm[:, None] & cm[None, :]
            off = rows[:, None] * N + cols[None, :]
            Wb = tl.load(W_b + off, mask=m2, other=0.0)
            Ab = tl.load(alpha_ptr + off, mask=m2, other=0.0)
            tl.store(W_b + off, _written(Wb, Ab, v0_bt, vb, rows, rm, cols, cm, coef_ptr, gS, N, S), mask=m2)
        tl.debug_barrier()  # W_out and the vector buffer settled before the next step


# --------------------------------------------------------------------------------------------------
# Backward


@triton.jit
def _bwd_onchip_kernel(
    gvS_ptr,
    gWT_ptr,
    v0_ptr,
    w0_ptr,
    alpha_ptr,
    kappa_ptr,
    gamma_ptr,
    coef_ptr,
    reset_ptr,
    vs_ptr,
    ps_ptr,
    ckpt_ptr,
    dv0_ptr,
    dW0_ptr,
    dalpha_ptr,
    dkappa_ptr,
    dgamma_ptr,
    dcoef_ptr,
    sub_ptr,
    seg_ptr,
    T,
    N: tl.constexpr,
    C,
    C2,
    NSUB,
    K_CK,
    S: tl.constexpr,
    BN: tl.constexpr,
    SP: tl.constexpr,
    SP1: tl.constexpr,
    ACT: tl.constexpr,
    TANH_SMALL: tl.constexpr,
    W0_BATCHED: tl.constexpr,
    HAS_RESET: tl.constexpr,
    RB: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    NN = tl.full([], N, tl.int64) * N  # int64: the scratch offsets m * NN, (t - ta) * NN must not wrap
    i = tl.arange(0, BN)
    im = i < N
    tile = i[:, None] * N + i[None, :]
    tmask = im[:, None] & im[None, :]
    sidx = tl.arange(0, SP1)
    pidx = tl.arange(0, SP)
    w0_b = w0_ptr + (b * NN if W0_BATCHED else 0)
    dW0_b = dW0_ptr + b * NN
    sub_b = sub_ptr + b * NSUB * NN
    seg_b = seg_ptr + b * C2 * NN
    gS = tl.load(gamma_ptr + S)
    dW = tl.load(gWT_ptr + b * NN + tile, mask=tmask, other=0.0)  # dL/dW_out of the current step
    dA = tl.zeros_like(dW)
    dK = tl.zeros([SP, SP1], dtype=dW.dtype)
    dG = tl.zeros([SP1], dtype=dW.dtype)
    dC = tl.zeros([SP1, SP], dtype=dW.dtype)
    nseg = tl.cdiv(T, C)
    for q in range(nseg):
        g = nseg - 1 - q
        t0 = g * C
        t1 = tl.minimum(t0 + C, T)
        nsub = tl.cdiv(t1 - t0, C2)
        src = ckpt_ptr + (b * K_CK + g - 1) * NN
        if g == 0:
            src = w0_b
        tl.debug_barrier()  # the previous segment is done reading sub
        _recompute(src, sub_b, t0, (nsub - 1) * C2 + 1, C2, b, T, N, v0_ptr, vs_ptr, w0_b, alpha_ptr,
                   gamma_ptr, coef_ptr, reset_ptr, S, RB, BN, HAS_RESET)  # fmt: skip
        for mm in range(nsub):
            m = nsub - 1 - mm
            ta = t0 + m * C2
            tb = tl.minimum(ta + C2, t1)
            tl.debug_barrier()  # sub written; seg no longer read by the previous sub-segment
            _recompute(sub_b + m * NN, seg_b, ta, tb - ta, 1, b, T, N, v0_ptr, vs_ptr, w0_b, alpha_ptr,
                       gamma_ptr, coef_ptr, reset_ptr, S, RB, BN, HAS_RESET)  # fmt: skip
            tl.debug_barrier()
            for tt in range(tb - ta):
                t = tb - 1 - tt
                bt = b * T + t
                Win = tl.load(seg_b + (t - ta) * NN + tile, mask=tmask, other=0.0)
                A = tl.load(alpha_ptr + tile, mask=tmask, other=0.0)
                # v_0..v_S, p_1..p_S and dL/dv_0..dv_S as tuples of vectors (unrolled at compile time).
                V = (tl.load(v0_ptr + bt * N + i, mask=im, other=0.0),)
                P = ()
                dV = ()
                dP = ()
                for j in tl.static_range(S):
                    V = _append(V, tl.load(vs_ptr + (bt * S + j) * N + i, mask=im, other=0.0))
                    P = _append(P, tl.load(ps_ptr + (bt * S + j) * N + i, mask=im, other=0.0))
                    dV = _append(dV, tl.zeros_like(V[0]))
                    dP = _append(dP, tl.zeros_like(V[0]))
                dV = _append(dV, tl.load(gvS_ptr + bt * N + i, mask=im, other=0.0))
                # The write W_out = gamma[S] W_in + alpha * sum_j coef[S, j] v_j v_j^T, with M = alpha * dW:
                # y_j = M v_j, z_j = M^T v_j.
                M = A * dW
                dG += tl.where(sidx == S, tl.sum(dW * Win), 0.0)
                for j in tl.static_range(S):
                    y = tl.sum(M * V[j][None, :], axis=1)
                    z = tl.sum(M * V[j][:, None], axis=0)
                    dC += tl.where((sidx[:, None] == S) & (pidx[None, :] == j), tl.sum(V[j] * y, axis=0), 0.0)
                    dV = _set(dV, j, dV[j] + tl.load(coef_ptr + S * S + j) * (y + z))
                # The inner steps, last first.
                for s in tl.static_range(S, 0, -1):
                    kbase = kappa_ptr + (s - 1) * (S + 1)
                    h = _act(P[s - 1], ACT, TANH_SMALL)
                    dvs = dV[s]
                    dK += tl.where((pidx[:, None] == s - 1) & (sidx[None, :] == s), tl.sum(dvs * h, axis=0), 0.0)
                    for l in tl.static_range(s):
                        dK += tl.where((pidx[:, None] == s - 1) & (sidx[None, :] == l), tl.sum(dvs * V[l], axis=0), 0.0)
                        dV = _set(dV, l, dV[l] + tl.load(kbase + l) * dvs)
                    dp = _act_grad_mul(P[s - 1], h, tl.load(kbase + s) * dvs, ACT)
                    dP = _set(dP, s - 1, dp)
                    # The read p_s = gamma[s-1] W_in x + sum_j coef[s-1, j] v_j * (alpha (v_j * x)), x = v_{s-1}.
                    x = V[s - 1]
                    r = tl.sum(Win * dp[:, None], axis=0)
                    dG += tl.where(sidx == s - 1, tl.sum(r * x, axis=0), 0.0)
                    dx = tl.load(gamma_ptr + s - 1) * r
                    for j in tl.static_range(s - 1):
                        c = tl.load(coef_ptr + (s - 1) * S + j)
                        a = tl.sum(A * (V[j] * x)[None, :], axis=1)
                        bb = tl.sum(A * (V[j] * dp)[:, None], axis=0)
                        dC += tl.where(
                            (sidx[:, None] == s - 1) & (pidx[None, :] == j), tl.sum(dp * V[j] * a, axis=0), 0.0
                        )
                        dV = _set(dV, j, dV[j] + c * (dp * a + x * bb))
                        dx += c * V[j] * bb
                    dV = _set(dV, s - 1, dV[s - 1] + dx)
                # dalpha and dW_in = gamma[S] dW + sum_s gamma[s-1] dp_s v_{s-1}^T; every outer product
                # multiplies a tile first (see the forward).
                for j in tl.static_range(S):
                    dA += (dW * (tl.load(coef_ptr + S * S + j) * V[j])[:, None]) * V[j][None, :]
                for s in tl.static_range(2, S + 1):
                    for j in tl.static_range(s - 1):
                        e = tl.load(coef_ptr + (s - 1) * S + j) * V[j] * dP[s - 1]
                        dA += e[:, None] * (V[j] * V[s - 1])[None, :]
                dW = gS * dW
                for s in tl.static_range(1, S + 1):
                    dW += (tl.load(gamma_ptr + s - 1) * dP[s - 1])[:, None] * V[s - 1][None, :]
                tl.store(dv0_ptr + bt * N + i, dV[0], mask=im)
                if (t == 0) | _resets(reset_ptr, b, T, t, HAS_RESET):
                    # W_in was W0: its gradient goes to dW0, and none flows to the previous step.
                    tl.debug_barrier()  # the previous reset's store is visible
                    acc = tl.load(dW0_b + tile, mask=tmask, other=0.0) + dW
                    tl.store(dW0_b + tile, acc, mask=tmask)
                    dW = tl.zeros_like(dW)
    tl.store(dalpha_ptr + b * NN + tile, dA, mask=tmask)
    _store_scalar_grads(dK, dG, dC, dkappa_ptr, dgamma_ptr, dcoef_ptr, b, sidx, pidx, S)


@triton.jit
def _bwd_stream_kernel(
    gvS_ptr,
    v0_ptr,
    w0_ptr,
    alpha_ptr,
    kappa_ptr,
    gamma_ptr,
    coef_ptr,
    reset_ptr,
    vs_ptr,
    ps_ptr,
    ckpt_ptr,
    dv0_ptr,
    dW0_ptr,
    dalpha_ptr,
    dkappa_ptr,
    dgamma_ptr,
    dcoef_ptr,
    sub_ptr,
    seg_ptr,
    dW_ptr,
    ybuf_ptr,
    dpbuf_ptr,
    T,
    N,
    C,
    C2,
    NSUB,
    K_CK,
    S: tl.constexpr,
    BR: tl.constexpr,
    BN: tl.constexpr,
    SP: tl.constexpr,
    SP1: tl.constexpr,
    ACT: tl.constexpr,
    TANH_SMALL: tl.constexpr,
    W0_BATCHED: tl.constexpr,
    HAS_RESET: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    NN = tl.full([], N, tl.int64) * N  # int64: the scratch offsets m * NN, (t - ta) * NN must not wrap
    ri = tl.arange(0, BR)
    cols = tl.arange(0, BN)
    cm = cols < N
    sidx = tl.arange(0, SP1)
    pidx = tl.arange(0, SP)
    w0_b = w0_ptr + (b * NN if W0_BATCHED else 0)
    dW0_b = dW0_ptr + b * NN
    dA_b = dalpha_ptr + b * NN  # zero-initialized partial, updated in place
    dW_b = dW_ptr + b * NN  # holds gWT[b] on entry
    yb = ybuf_ptr + b * S * N  # row-reduced vectors (y_j, then a_j) on their way to full length
    dpb = dpbuf_ptr + b * S * N  # dp_1..dp_S, read back by row block
    sub_b = sub_ptr + b * NSUB * NN
    seg_b = seg_ptr + b * C2 * NN
    gS = tl.load(gamma_ptr + S)
    ymask = (pidx[:, None] < S) & cm[None, :]
    yoff = pidx[:, None] * N + cols[None, :]
    dK = tl.zeros([SP, SP1], dtype=gS.dtype)
    dG = tl.zeros([SP1], dtype=gS.dtype)
    dC = tl.zeros([SP1, SP], dtype=gS.dtype)
    nseg = tl.cdiv(T, C)
    for q in range(nseg):
        g = nseg - 1 - q
        t0 = g * C
        t1 = tl.minimum(t0 + C, T)
        nsub = tl.cdiv(t1 - t0, C2)
        src = ckpt_ptr + (b * K_CK + g - 1) * NN
        if g == 0:
            src = w0_b
        tl.debug_barrier()
        _recompute(src, sub_b, t0, (nsub - 1) * C2 + 1, C2, b, T, N, v0_ptr, vs_ptr, w0_b, alpha_ptr,
                   gamma_ptr, coef_ptr, reset_ptr, S, BR, BN, HAS_RESET)  # fmt: skip
        for mm in range(nsub):
            m = nsub - 1 - mm
            ta = t0 + m * C2
            tb = tl.minimum(ta + C2, t1)
            tl.debug_barrier()
            _recompute(sub_b + m * NN, seg_b, ta, tb - ta, 1, b, T, N, v0_ptr, vs_ptr, w0_b, alpha_ptr,
                       gamma_ptr, coef_ptr, reset_ptr, S, BR, BN, HAS_RESET)  # fmt: skip
            for tt in range(tb - ta):
                t = tb - 1 - tt
                bt = b * T + t
                v0_bt = v0_ptr + bt * N
                vs_bt = vs_ptr + bt * S * N
                win_b = seg_b + (t - ta) * NN
                tl.debug_barrier()  # seg, dW and the vector buffers settled
                V, P, dV = _load_step(v0_ptr, vs_ptr, ps_ptr, gvS_ptr, bt, N, cols, cm, sidx, pidx, S)
                # The write: y_j by row blocks through yb, z_j and <dW, W_in> in registers.
                Zt = tl.zeros([SP, BN], dtype=gS.dtype)
                gacc = tl.zeros([BN], dtype=gS.dtype)
                for r0 in range(0, N, BR):
                    rows = r0 + ri
                    rm = rows < N
                    m2 = rm[:, None] & cm[None, :]
                    off = rows[:, None] * N + cols[None, :]
                    dWb = tl.load(dW_b + off, mask=m2, other=0.0)
                    Mb = tl.load(alpha_ptr + off, mask=m2, other=0.0) * dWb
                    gacc += tl.sum(dWb * tl.load(win_b + off, mask=m2, other=0.0), axis=0)
                    for j in tl.static_range(S):
                        vj = _row(V, sidx, j)
                        vr = _vec(v0_bt, vs_bt, j, rows, rm, N)
                        tl.store(yb + j * N + rows, tl.sum(Mb * vj[None, :], axis=1), mask=rm)
                        Zt = _add_row(Zt, pidx, j, tl.sum(Mb * vr[:, None], axis=0))
                tl.debug_barrier()
                dG += tl.where(sidx == S, tl.sum(gacc, axis=0), 0.0)
                Yt = tl.load(yb + yoff, mask=ymask, other=0.0)
                dV, dC = _write_term_post(Yt, Zt, V, dV, dC, sidx, pidx, coef_ptr, S)
                for s in tl.static_range(S, 0, -1):
                    dV, dK, dp = _inner_pre(s, V, P, dV, dK, sidx, pidx, kappa_ptr, S, ACT, TANH_SMALL)
                    tl.debug_barrier()  # yb no longer read
                    tl.store(dpb + (s - 1) * N + cols, dp, mask=cm)
                    tl.debug_barrier()
                    x = _row(V, sidx, s - 1)
                    r = tl.zeros([BN], dtype=gS.dtype)
                    Bt = tl.zeros([SP, BN], dtype=gS.dtype)
                    for r0 in range(0, N, BR):
                        rows = r0 + ri
                        rm = rows < N
                        m2 = rm[:, None] & cm[None, :]
                        off = rows[:, None] * N + cols[None, :]
                        dpr = tl.load(dpb + (s - 1) * N + rows, mask=rm, other=0.0)
                        r += tl.sum(tl.load(win_b + off, mask=m2, other=0.0) * dpr[:, None], axis=0)
                        if s >= 2:
                            Ab = tl.load(alpha_ptr + off, mask=m2, other=0.0)
                            for j in tl.static_range(s - 1):
                                vj = _row(V, sidx, j)
                                vr = _vec(v0_bt, vs_bt, j, rows, rm, N)
                                tl.store(yb + j * N + rows, tl.sum(Ab * (vj * x)[None, :], axis=1), mask=rm)
                                Bt = _add_row(Bt, pidx, j, tl.sum(Ab * (vr * dpr)[:, None], axis=0))
                    tl.debug_barrier()
                    At = tl.load(yb + yoff, mask=ymask & (pidx[:, None] < s - 1), other=0.0)
                    dV, dG, dC = _inner_post(s, r, At, Bt, dp, V, dV, dG, dC, sidx, pidx, gamma_ptr, coef_ptr, S)
                # dalpha and dW_in, by row blocks in place.
                for r0 in range(0, N, BR):
                    rows = r0 + ri
                    rm = rows < N
                    m2 = rm[:, None] & cm[None, :]
                    off = rows[:, None] * N + cols[None, :]
                    dWb = tl.load(dW_b + off, mask=m2, other=0.0)
                    Z = tl.zeros_like(dWb)
                    for j in tl.static_range(S):
                        vr = _vec(v0_bt, vs_bt, j, rows, rm, N)
                        Z += (tl.load(coef_ptr + S * S + j) * vr)[:, None] * _row(V, sidx, j)[None, :]
                    dAb = tl.load(dA_b + off, mask=m2, other=0.0) + dWb * Z
                    for s in tl.static_range(2, S + 1):
                        dpr = tl.load(dpb + (s - 1) * N + rows, mask=rm, other=0.0)
                        x = _row(V, sidx, s - 1)
                        for j in tl.static_range(s - 1):
                            vr = _vec(v0_bt, vs_bt, j, rows, rm, N)
                            c = tl.load(coef_ptr + (s - 1) * S + j)
                            dAb += (c * vr * dpr)[:, None] * (_row(V, sidx, j) * x)[None, :]
                    tl.store(dA_b + off, dAb, mask=m2)
                    dWb = gS * dWb
                    for s in tl.static_range(1, S + 1):
                        dpr = tl.load(dpb + (s - 1) * N + rows, mask=rm, other=0.0)
                        dWb += (tl.load(gamma_ptr + s - 1) * dpr)[:, None] * _row(V, sidx, s - 1)[None, :]
                    tl.store(dW_b + off, dWb, mask=m2)
                tl.store(dv0_ptr + bt * N + cols, _row(dV, sidx, 0), mask=cm)
                if (t == 0) | _resets(reset_ptr, b, T, t, HAS_RESET):
                    tl.debug_barrier()
                    for r0 in range(0, N, BR):
                        rows = r0 + ri
                        m2 = (rows < N)[:, None] & cm[None, :]
                        off = rows[:, None] * N + cols[None, :]
                        acc = tl.load(dW0_b + off, mask=m2, other=0.0) + tl.load(dW_b + off, mask=m2, other=0.0)
                        tl.store(dW0_b + off, acc, mask=m2)
                        tl.store(dW_b + off, tl.zeros_like(acc), mask=m2)
    _store_scalar_grads(dK, dG, dC, dkappa_ptr, dgamma_ptr, dcoef_ptr, b, sidx, pidx, S)


# --------------------------------------------------------------------------------------------------
# Host launchers


def _device(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _or(t: torch.Tensor | None, fallback: torch.Tensor) -> torch.Tensor:
    """A pointer the kernel never dereferences (absent or empty tensors) still has to be valid."""
    return fallback if t is None or t.numel() == 0 else t


def _num_warps(BN: int, on_chip: bool, backward: bool) -> int:
    """On chip, the fewest warps whose sm_90 build of the kernel has no register spills for fp32 and
    S <= 2 (ptxas resource usage; the N = 128 forward spills at any count, see the module docstring
    for the rest). Streaming: 16 warps forward; 8 backward, whose 16-warp build is held to 128
    registers and spills (16 to 232 bytes per thread from N = 256 at S = 2, from N = 128 at S = 4).
    Not tuned by timing; ``tests/triton_aot.py`` reports the numbers."""
    if not on_chip:
        return 8 if backward else 16
    return max(4, min(8, BN // 4)) if backward else max(2, min(16, BN // 8))


def _geometry(N: int, S: int, backward: bool) -> dict:
    BN = triton.next_power_of_2(N)
    on_chip = N <= (MAX_ON_CHIP_N_BACKWARD if backward else MAX_ON_CHIP_N)
    BR = BN if on_chip else max(1, min(BN, STREAM_TILE // BN))
    RB = max(1, min(BN, RECOMPUTE_TILE // BN))
    return {"BN": BN, "BR": BR, "RB": RB, "on_chip": on_chip, "SP": triton.next_power_of_2(S),
            "SP1": triton.next_power_of_2(S + 1), "num_warps": _num_warps(BN, on_chip, backward)}  # fmt: skip


def _tanh_small(dtype: torch.dtype) -> float:
    return 0.0625 if dtype == torch.float64 else 0.25


def _checkpoints(T: int, C: int) -> int:
    return -(-T // C) - 1


def metods_forward_triton(
    v0: torch.Tensor,
    W0: torch.Tensor,
    alpha: torch.Tensor,
    kappa: torch.Tensor,
    gamma: torch.Tensor,
    coef: torch.Tensor,
    reset: torch.Tensor | None,
    act: int,
    C: int,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(vS [B, T, N], W_T [B, N, N], vs [B, T, S, N], ps [B, T, S, N], ckpt [B, K, N, N]); the saved
    tensors are empty (T = 0, K = 0) unless ``save``. Inputs contiguous, in the compute dtype."""
    B, T, N = v0.shape
    S = kappa.shape[0]
    geo = _geometry(N, S, backward=False)
    vS = torch.empty_like(v0)
    WT = v0.new_empty(B, N, N)
    K = _checkpoints(T, C)
    if save:
        vs, ps, ckpt = v0.new_empty(B, T, S, N), v0.new_empty(B, T, S, N), v0.new_empty(B, K, N, N)
    else:
        vs, ps, ckpt = v0.new_empty(B, 0, S, N), v0.new_empty(B, 0, S, N), v0.new_empty(B, 0, N, N)
    flags = None if reset is None else reset.view(torch.uint8)
    common = {"S": S, "BN": geo["BN"], "ACT": act, "TANH_SMALL": _tanh_small(v0.dtype),
              "W0_BATCHED": W0.dim() == 3, "HAS_RESET": reset is not None, "SAVE": save,
              "num_warps": geo["num_warps"], "num_stages": 1}  # fmt: skip
    args = (v0, W0, alpha, kappa, gamma, coef, _or(flags, v0), vS, WT, _or(vs, v0), _or(ps, v0), _or(ckpt, v0))
    with _device(v0):
        if geo["on_chip"]:
            _fwd_onchip_kernel[(B,)](*args, T, N, C, K, **common)
        else:
            vbuf = v0 if save else v0.new_empty(B, S, N)
            _fwd_stream_kernel[(B,)](*args, vbuf, T, N, C, K, BR=geo["BR"], **common)
    return vS, WT, vs, ps, ckpt


def metods_backward_triton(
    gvS: torch.Tensor,
    gWT: torch.Tensor,
    v0: torch.Tensor,
    W0: torch.Tensor,
    alpha: torch.Tensor,
    kappa: torch.Tensor,
    gamma: torch.Tensor,
    coef: torch.Tensor,
    reset: torch.Tensor | None,
    vs: torch.Tensor,
    ps: torch.Tensor,
    ckpt: torch.Tensor,
    act: int,
    C: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dv0, dW0 (the shape of W0), dalpha, dkappa, dgamma, dcoef) from the forward's saved tensors."""
    B, T, N = v0.shape
    S = kappa.shape[0]
    geo = _geometry(N, S, backward=True)
    K = _checkpoints(T, C)
    C2 = C if C <= ONE_PASS_MAX_C else math.ceil(math.sqrt(C))
    nsub = -(-C // C2)
    batched = W0.dim() == 3
    dv0 = torch.empty_like(v0)
    # Per-sequence partials of the shared gradients, summed over B below (deterministic, no atomics).
    dW0_part = v0.new_zeros(B, N, N)
    dalpha_part = v0.new_zeros(B, N, N)
    dkappa_part = v0.new_empty(B, S, S + 1)
    dgamma_part = v0.new_empty(B, S + 1)
    dcoef_part = v0.new_empty(B, S + 1, S)
    sub = v0.new_empty(B, nsub, N, N)
    seg = v0.new_empty(B, C2, N, N)
    flags = None if reset is None else reset.view(torch.uint8)
    common = {"S": S, "BN": geo["BN"], "SP": geo["SP"], "SP1": geo["SP1"], "ACT": act,
              "TANH_SMALL": _tanh_small(v0.dtype), "W0_BATCHED": batched, "HAS_RESET": reset is not None,
              "num_warps": geo["num_warps"], "num_stages": 1}  # fmt: skip
    inputs = (v0, W0, alpha, kappa, gamma, coef, _or(flags, v0), vs, ps, _or(ckpt, v0))
    outputs = (dv0, dW0_part, dalpha_part, dkappa_part, dgamma_part, dcoef_part, sub, seg)
    sizes = (T, N, C, C2, nsub, K)
    with _device(v0):
        if geo["on_chip"]:
            _bwd_onchip_kernel[(B,)](gvS, gWT, *inputs, *outputs, *sizes, RB=geo["RB"], **common)
        else:
            dW = gWT.clone()
            ybuf = v0.new_empty(B, S, N)
            dpbuf = v0.new_empty(B, S, N)
            _bwd_stream_kernel[(B,)](gvS, *inputs, *outputs, dW, ybuf, dpbuf, *sizes, BR=geo["BR"], **common)
    dW0 = dW0_part if batched else dW0_part.sum(0)
    return dv0, dW0, dalpha_part.sum(0), dkappa_part.sum(0), dgamma_part.sum(0), dcoef_part.sum(0)
