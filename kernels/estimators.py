"""Triton kernel of the magic-box estimator ops (``metakern.estimators``): value, log-prob gradient
and Hessian-vector product per trajectory row, the same three passes as the C++ kernel
(cpp/estimators/estimator_ops.h has the formulas).

Each program owns BLOCK_B rows and walks time sequentially: the passes are recurrences along time
(discount, episode-reset cumulative sums, the reverse sums of h and R, the forward sum F), so the
parallelism is across rows. Each step loads one element per row; consecutive steps of a row share
cache lines, so the strided loads are served from L1/L2 after the first. A [B, T] scratch holds h
between the reverse and the last forward pass.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

KIND_CODES = {"maml": 0, "dice": 1, "dice_baseline": 2, "loaded_dice": 3, "lvc": 4, "off_policy_dice": 5}


@triton.jit
def _continues_previous(dn_ptr, base, t, ok, zero, HAS_DONES: tl.constexpr):
    """Per row: does step t continue step t-1's episode (t > 0 and no done after step t-1)?"""
    if HAS_DONES:
        prev_done = tl.load(dn_ptr + base + t - 1, mask=ok & (t > 0), other=0) != 0
        return (t > 0) & (prev_done == 0)
    return (zero + t) > 0


@triton.jit
def _estimator_kernel(
    l_ptr,
    sig_ptr,
    val_ptr,
    beh_ptr,
    dn_ptr,
    u_ptr,
    value_ptr,
    g_ptr,
    y_ptr,
    h_ptr,
    params_ptr,
    B,
    T,
    KIND: tl.constexpr,
    HAS_DONES: tl.constexpr,
    WANT_VALUE: tl.constexpr,
    WANT_G: tl.constexpr,
    WANT_Y: tl.constexpr,
    ACC_FP64: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    acc_ty = tl.float64 if ACC_FP64 else tl.float32
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    ok = rows < B
    base = rows * T
    # gamma, lam, cap come in a tensor of the accumulation dtype: Triton would type Python floats as
    # float32, which is not exact enough for float64 work.
    gamma = tl.load(params_ptr + 0)
    lam = tl.load(params_ptr + 1)
    cap = tl.load(params_ptr + 2)
    zero = tl.zeros([BLOCK_B], dtype=acc_ty)
    one = zero + 1.0
    total = zero
    d = one
    c = zero
    # Pass 1 (forward): discount, value, per-step inputs of h.
    for t in range(0, T):
        cont = _continues_previous(dn_ptr, base, t, ok, zero, HAS_DONES)
        d = tl.where(cont, gamma * d, one)
        s = tl.load(sig_ptr + base + t, mask=ok, other=0.0).to(acc_ty)
        ht = d * s
        if KIND == 0:
            lt = tl.load(l_ptr + base + t, mask=ok, other=0.0).to(acc_ty)
            total += ht * lt
        elif (KIND == 1 or KIND == 2) or KIND == 4:
            total += ht
        elif KIND == 5:
            lt = tl.load(l_ptr + base + t, mask=ok, other=0.0).to(acc_ty)
            bt = tl.load(beh_ptr + base + t, mask=ok, other=0.0).to(acc_ty)
            c = tl.where(cont, c, zero) + lt - bt
            clamped = c > cap
            w = tl.exp(tl.minimum(c, cap)) * ht
            total += w
            ht = tl.where(clamped, zero, w)
        if WANT_G or WANT_Y:
            tl.store(h_ptr + base + t, ht, mask=ok)
    if WANT_VALUE:
        tl.store(value_ptr + rows, total.to(value_ptr.dtype.element_ty), mask=ok)
    if WANT_G or WANT_Y:
        if KIND == 3:
            lam_in = lam
        elif (KIND == 1 or KIND == 2) or KIND == 5:  # the cumulative (DiCE-type) kinds
            lam_in = 1.0
        else:
            lam_in = 0.0
        # Pass 2 (reverse): h's reverse sums, g = h + e, and R (kept in y).
        acc = zero
        R = zero
        for i in range(0, T):
            t = T - 1 - i
            if HAS_DONES:
                done = tl.load(dn_ptr + base + t, mask=ok, other=1) != 0
                cont = (done == 0) & (t + 1 < T)
            else:
                cont = (zero + t + 1) < T
            ht = tl.load(h_ptr + base + t, mask=ok, other=0.0)
            if (KIND == 1 or KIND == 2) or KIND == 5:
                acc = ht + tl.where(cont, acc, zero)
                ht = acc
                tl.store(h_ptr + base + t, ht, mask=ok)
            if WANT_G and KIND != 2:  # the baseline's g = h + e needs d_t: pass 3 writes it
                tl.store(g_ptr + base + t, ht.to(g_ptr.dtype.element_ty), mask=ok)
            if WANT_Y:
                if KIND == 0:
                    tl.store(y_ptr + base + t, zero.to(y_ptr.dtype.element_ty), mask=ok)
                else:
                    ut = tl.load(u_ptr + base + t, mask=ok, other=0.0).to(acc_ty)
                    R = ht * ut + tl.where(cont, lam_in * R, zero)
                    tl.store(y_ptr + base + t, R.to(y_ptr.dtype.element_ty), mask=ok)
        # Pass 3 (forward): F, (H u)_j = h_j (F_j - u_j) + R_j + e_j u_j, and the baseline's e in g.
        if (WANT_Y and KIND != 0) or (WANT_G and KIND == 2):
            F = zero
            d = one
            for t in range(0, T):
                cont = _continues_previous(dn_ptr, base, t, ok, zero, HAS_DONES)
                d = tl.where(cont, gamma * d, one)
                et = zero
                if KIND == 2:
                    et = -d * tl.load(val_ptr + base + t, mask=ok, other=0.0).to(acc_ty)
                    if WANT_G:
                        ht = tl.load(h_ptr + base + t, mask=ok, other=0.0)
                        tl.store(g_ptr + base + t, (ht + et).to(g_ptr.dtype.element_ty), mask=ok)
                if WANT_Y and KIND != 0:
                    ht = tl.load(h_ptr + base + t, mask=ok, other=0.0)
                    ut = tl.load(u_ptr + base + t, mask=ok, other=0.0).to(acc_ty)
                    F = tl.where(cont, lam_in * F, zero) + ut
                    Rt = tl.load(y_ptr + base + t, mask=ok, other=0.0).to(acc_ty)
                    yt = ht * (F - ut) + Rt + et * ut
                    tl.store(y_ptr + base + t, yt.to(y_ptr.dtype.element_ty), mask=ok)


def estimator_terms_triton(kind, logp, signal, values, behaviour, dones, u, want_value, want_g, gamma, lam, cap):
    """Launch the kernel on contiguous [B, T] float32/float64 inputs (validated by the caller);
    ``dones`` is a bool tensor or None. Returns (value [B] or None, g or None, y or None)."""
    B, T = logp.shape
    acc = torch.float64 if logp.dtype == torch.float64 else torch.float32
    value = torch.empty(B, dtype=logp.dtype, device=logp.device) if want_value else None
    g = torch.empty_like(logp) if want_g else None
    y = torch.empty_like(logp) if u is not None else None
    h = torch.empty(B, T, dtype=acc, device=logp.device) if (want_g or u is not None) else None
    dn = dones.view(torch.uint8) if dones is not None else None
    block_b = min(triton.next_power_of_2(max(B, 1)), 128)
    grid = (triton.cdiv(B, block_b),)
    params = torch.tensor([gamma, lam, cap], dtype=acc, device=logp.device)
    dummy = logp  # stands in for absent pointers; never read (the constexpr flags skip those loads)
    _estimator_kernel[grid](
        logp, signal, values if values is not None else dummy, behaviour if behaviour is not None else dummy,
        dn if dn is not None else dummy, u if u is not None else dummy,
        value if value is not None else dummy, g if g is not None else dummy, y if y is not None else dummy,
        h if h is not None else dummy, params, B, T,
        KIND=KIND_CODES[kind], HAS_DONES=dn is not None, WANT_VALUE=want_value, WANT_G=want_g,
        WANT_Y=u is not None, ACC_FP64=acc == torch.float64, BLOCK_B=block_b,
    )  # fmt: skip
    return value, g, y
