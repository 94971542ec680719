"""MetODS dynamic synapses as a fused recurrent op: ``metakern::metods_synapse`` and its backward.

``metods_synapse(v0, W0, alpha, kappa, beta, reset)`` runs Algorithm 1 of Chalvidal et al. (2022)
over whole sequences (the math: ``synapse_reference``) without storing any per-step matrix:

* the write recursion has a closed form for scalar beta, W^(s) = gamma_s W + alpha * sum_j
  coef_{s,j} v_j v_j^T (``synapse_coefficients``, differentiable torch on S x S numbers), so a step
  keeps only W, alpha and S + 1 vectors live;
* the forward saves the S read pre-activations and S inner vectors per step (2 S N values) and the
  matrix of every ``checkpoint_every``-th step (C; default ceil(N / (2 S)), so that checkpoints
  cost about what the vectors cost);
* the backward recomputes W from the checkpoints segment by segment (a segment longer than 64
  steps with a nested sqrt split) and runs the step's adjoint in reverse. Memory: B*N*N*ceil(T/C)
  for the checkpoints, 2*B*T*S*N for the vectors, and about C*N*N per worker (2*sqrt(C)*N*N for
  C > 64): O(B*T*S*N) in all, no T*N*N term; C = T keeps only W0.

Gradients flow to v0, W0, alpha, kappa and beta (through gamma and coef). The reductions over
batch and time (alpha, kappa, beta, a shared W0) are deterministic. The backward op is once
differentiable and says so when differentiated again.

Backends (``metakern._backend``): ``cpp`` (CPU, OpenMP over sequences), ``triton`` (CUDA, one
program per sequence; CPU under TRITON_INTERPRET=1 for tests) and ``reference`` (the same closed
form in batched torch, differentiated by autograd in the backward). State and accumulators are
float32 (float64 for float64 inputs) even when v0 is bfloat16 or float16.
"""

from __future__ import annotations

import math

import torch

from .. import _backend, _validate
from .scan import direct_call_ok
from .synapse_reference import ACTIVATIONS, activation_fn, synapse_coefficients

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
_ACT_CODES = {name: i for i, name in enumerate(ACTIVATIONS)}
_PREFERENCE = {"cpu": ("cpp",), "cuda": ("triton",)}
MAX_S = 16
V_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of W, the parameters and every accumulator for inputs v0 of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _select(device_type: str) -> str:
    backend = _backend.select("metods_synapse", device_type, _PREFERENCE.get(device_type, ()))
    if backend == "cuda":
        raise RuntimeError(
            "metakern: the CUDA module has no metods_synapse kernel; on CUDA tensors use the 'triton' backend "
            "(the default) or 'reference'"
        )
    return backend


# --------------------------------------------------------------------------------------------------
# Validation


def check_synapse_args(
    v0: torch.Tensor,
    W0: torch.Tensor,
    alpha: torch.Tensor,
    kappa: torch.Tensor,
    beta: torch.Tensor,
    reset: torch.Tensor | None,
    activation: str,
    checkpoint_every: int | None,
) -> None:
    """v0 [B, T, N] (float32/float64/bfloat16/float16); W0 [B, N, N] or [N, N], alpha [N, N],
    kappa and beta [S, S+1], all of the compute dtype (float64 for float64 v0, else float32);
    reset [B, T] bool or integer 0/1, or None; one device; activation in ACTIVATIONS;
    checkpoint_every a positive int or None."""
    _validate.tensor("v0", v0, ndim=3, layout="[B, T, N]", dtypes=V_DTYPES)
    B, T, N = v0.shape
    cd = compute_dtype(v0.dtype)
    for name, t, ndims, layout in (
        ("W0", W0, (2, 3), "[B, N, N] or [N, N]"),
        ("alpha", alpha, (2,), "[N, N]"),
        ("kappa", kappa, (2,), "[S, S+1]"),
        ("beta", beta, (2,), "[S, S+1]"),
    ):
        _validate.tensor(name, t, layout=layout, dtypes=V_DTYPES)
        if t.dim() not in ndims:
            raise ValueError(f"{name}: expected a tensor of shape {layout}, got shape {tuple(t.shape)}")
        _validate.same_device(name, t, "v0", v0)
        if t.dtype != cd:
            raise TypeError(
                f"{name}: expected dtype {cd} (synaptic state and parameters are {cd} for {v0.dtype} v0), got {t.dtype}"
            )
    expected_w0 = (B, N, N) if W0.dim() == 3 else (N, N)
    _validate.shape("W0", W0, expected_w0, "[B, N, N] or [N, N] with B, N of v0")
    _validate.shape("alpha", alpha, (N, N), "[N, N] with N of v0")
    S = kappa.shape[0]
    if not 1 <= S <= MAX_S or kappa.shape[1] != S + 1:
        raise ValueError(f"kappa: expected shape [S, S+1] with 1 <= S <= {MAX_S}, got {tuple(kappa.shape)}")
    _validate.shape("beta", beta, (S, S + 1), "[S, S+1] (the shape of kappa)")
    if reset is not None:
        if not isinstance(reset, torch.Tensor):
            raise TypeError(f"reset: expected a torch.Tensor or None, got {type(reset).__name__}")
        if reset.dtype.is_floating_point or reset.dtype.is_complex:
            raise TypeError(f"reset: expected a bool or integer tensor of 0/1 flags, got {reset.dtype}")
        _validate.same_device("reset", reset, "v0", v0)
        _validate.shape("reset", reset, (B, T), "[B, T] of v0")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    if checkpoint_every is not None and (
        isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1
    ):
        raise ValueError(f"checkpoint_every: expected a positive int or None, got {checkpoint_every!r}")


def _reset_flags(reset: torch.Tensor | None) -> torch.Tensor | None:
    """[B, T] bool, contiguous (one byte per flag for the kernels); values other than 0/1 are refused."""
    if reset is None:
        return None
    if reset.dtype != torch.bool:
        lo, hi = (int(x) for x in torch.aminmax(reset))
        if lo < 0 or hi > 1:
            raise ValueError(f"reset: expected 0/1 flags, got values in [{lo}, {hi}]")
        reset = reset != 0
    return reset.contiguous()


def num_checkpoints(T: int, C: int) -> int:
    """Matrices the forward saves per sequence (step 0's input is W0 itself)."""
    return -(-T // C) - 1


# --------------------------------------------------------------------------------------------------
# Reference backend: the closed form in batched torch


def _closed_form_step(W, x0, alpha, kappa, gamma, coef, sigma):
    """One step of the closed form from W_in: (v_0..v_S, p_1..p_S, W_out), batched over sequences."""
    S = kappa.shape[0]
    vs, ps = [x0], []
    for s in range(1, S + 1):
        x = vs[s - 1]
        p = gamma[s - 1] * torch.bmm(W, x.unsqueeze(-1)).squeeze(-1)
        for j in range(s - 1):
            p = p + coef[s - 1, j] * vs[j] * ((vs[j] * x) @ alpha.T)
        v = kappa[s - 1, s] * sigma(p)
        for l in range(s):
            v = v + kappa[s - 1, l] * vs[l]
        vs.append(v)
        ps.append(p)
    outer = sum(coef[S, j] * vs[j].unsqueeze(-1) * vs[j].unsqueeze(-2) for j in range(S))
    return vs, ps, gamma[S] * W + alpha * outer


def metods_closed_form(v0, W0, alpha, kappa, gamma, coef, reset, activation: str):
    """(v_S, W_T, p) of the closed-form recursion (module docstring of ``metods.h``) in plain torch,
    batched over sequences; p [B, T, S, N] are the read pre-activations. Differentiable."""
    sigma = activation_fn(activation)
    B, T, N = v0.shape
    W0b = W0.expand(B, N, N)
    W = W0b
    outs, pres = [], []
    for t in range(T):
        if reset is not None and t > 0:
            W = torch.where(reset[:, t].reshape(B, 1, 1), W0b, W)
        vs, ps, W = _closed_form_step(W, v0[:, t], alpha, kappa, gamma, coef, sigma)
        outs.append(vs[-1])
        pres.append(torch.stack(ps, dim=1))
    return torch.stack(outs, dim=1), W, torch.stack(pres, dim=1)


def _empty_saved(v0, S, N):
    B = v0.shape[0]
    e = v0.new_empty(B, 0, S, N)
    return e, e.clone(), v0.new_empty(B, 0, N, N)


def _fwd_reference(v0, W0, alpha, kappa, gamma, coef, reset, act, C, save):
    vS, WT, _ = metods_closed_form(v0, W0, alpha, kappa, gamma, coef, reset, ACTIVATIONS[act])
    return (vS, WT.contiguous(), *_empty_saved(v0, kappa.shape[0], v0.shape[2]))


def metods_closed_form_backward(gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, activation: str):
    """The adjoint of ``metods_closed_form`` written out in batched torch, the same algorithm as the
    compiled backward kernels (``cpp/synapse/metods_cpu.cpp``) but keeping every step's input matrix.
    Returns (dv0, dW0, dalpha, dkappa, dgamma, dcoef)."""
    B, T, N = v0.shape
    S = kappa.shape[0]
    sigma = activation_fn(activation)
    W0b = W0.expand(B, N, N)
    # Forward, keeping W_in, the vectors and the pre-activations of every step.
    win, vecs, pres = [], [], []
    W = W0b
    for t in range(T):
        if reset is not None and t > 0:
            W = torch.where(reset[:, t].reshape(B, 1, 1), W0b, W)
        win.append(W)
        vs, ps, W = _closed_form_step(W, v0[:, t], alpha, kappa, gamma, coef, sigma)
        vecs.append(vs)
        pres.append(torch.stack(ps, dim=1))
    dv0 = torch.zeros_like(v0)
    dW0 = torch.zeros_like(W0b)
    dalpha = torch.zeros_like(alpha)
    dkappa = torch.zeros_like(kappa)
    dgamma = torch.zeros_like(gamma)
    dcoef = torch.zeros_like(coef)
    dW = gWT.clone()
    for t in reversed(range(T)):
        Win, v, p = win[t], vecs[t], pres[t]
        dv = [torch.zeros_like(v[0]) for _ in range(S)] + [gvS[:, t].clone()]
        # The write: W_out = gamma[S] W_in + alpha * sum_j coef[S, j] v_j v_j^T.
        M = alpha * dW
        dgamma[S] += (dW * Win).sum()
        for j in range(S):
            y = torch.bmm(M, v[j].unsqueeze(-1)).squeeze(-1)
            z = torch.bmm(M.transpose(1, 2), v[j].unsqueeze(-1)).squeeze(-1)
            dcoef[S, j] += (v[j] * y).sum()
            dv[j] = dv[j] + coef[S, j] * (y + z)
            dalpha += coef[S, j] * (dW * (v[j].unsqueeze(-1) * v[j].unsqueeze(-2))).sum(0)
        dWin = gamma[S] * dW
        for s in range(S, 0, -1):
            h = sigma(p[:, s - 1])
            dkappa[s - 1, s] += (dv[s] * h).sum()
            for l in range(s):
                dkappa[s - 1, l] += (dv[s] * v[l]).sum()
                dv[l] = dv[l] + kappa[s - 1, l] * dv[s]
            dp = kappa[s - 1, s] * dv[s] * _activation_grad(activation, p[:, s - 1], h)
            x = v[s - 1]
            r = torch.bmm(Win.transpose(1, 2), dp.unsqueeze(-1)).squeeze(-1)
            dgamma[s - 1] += (r * x).sum()
            dv[s - 1] = dv[s - 1] + gamma[s - 1] * r
            dWin = dWin + gamma[s - 1] * dp.unsqueeze(-1) * x.unsqueeze(-2)
            for j in range(s - 1):
                c = coef[s - 1, j]
                a = (v[j] * x) @ alpha.T
                b = (v[j] * dp) @ alpha
                dcoef[s - 1, j] += (dp * v[j] * a).sum()
                dv[j] = dv[j] + c * (dp * a + x * b)
                dv[s - 1] = dv[s - 1] + c * v[j] * b
                dalpha += c * ((v[j] * dp).unsqueeze(-1) * (v[j] * x).unsqueeze(-2)).sum(0)
        dv0[:, t] = dv[0]
        # W_in came from W0 at t = 0 and at resets: its gradient goes there, not to step t - 1.
        if t == 0:
            dW0 = dW0 + dWin
        elif reset is not None:
            flags = reset[:, t].reshape(B, 1, 1)
            dW0 = dW0 + torch.where(flags, dWin, torch.zeros_like(dWin))
            dW = torch.where(flags, torch.zeros_like(dWin), dWin)
        else:
            dW = dWin
    return dv0, (dW0 if W0.dim() == 3 else dW0.sum(0)), dalpha, dkappa, dgamma, dcoef


def _activation_grad(activation: str, p: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    if activation == "tanh":
        return 1 - h * h
    if activation == "relu":
        return (p > 0).to(p.dtype)
    return torch.ones_like(p)


def _bwd_reference(gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, act, C):
    return metods_closed_form_backward(gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, ACTIVATIONS[act])


# --------------------------------------------------------------------------------------------------
# C++ backend


def _sizes(v0, kappa, W0):
    B, T, N = v0.shape
    return B, T, N, kappa.shape[0], W0.dim() == 3


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


def _fwd_cpp(v0, W0, alpha, kappa, gamma, coef, reset, act, C, save):
    B, T, N, S, batched = _sizes(v0, kappa, W0)
    vS = torch.empty_like(v0)
    WT = v0.new_empty(B, N, N)
    if save:
        vs = v0.new_empty(B, T, S, N)
        ps = v0.new_empty(B, T, S, N)
        ckpt = v0.new_empty(B, num_checkpoints(T, C), N, N)
    else:
        vs, ps, ckpt = _empty_saved(v0, S, N)
    _backend.cpp_module().metods_forward(
        _DTYPE_CODES[v0.dtype], v0.data_ptr(), W0.data_ptr(), alpha.data_ptr(), kappa.data_ptr(),
        gamma.data_ptr(), coef.data_ptr(), _ptr(reset), vS.data_ptr(), WT.data_ptr(),
        _ptr(vs) if save else 0, _ptr(ps) if save else 0, _ptr(ckpt), B, T, N, S, act, C, batched,
        torch.get_num_threads(),
    )  # fmt: skip
    return vS, WT, vs, ps, ckpt


def _bwd_cpp(gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, act, C):
    B, T, N, S, batched = _sizes(v0, kappa, W0)
    dv0 = torch.empty_like(v0)
    dW0 = torch.empty_like(W0)
    dalpha = torch.empty_like(alpha)
    dkappa = torch.empty_like(kappa)
    dgamma = torch.empty_like(gamma)
    dcoef = torch.empty_like(coef)
    _backend.cpp_module().metods_backward(
        _DTYPE_CODES[v0.dtype], gvS.data_ptr(), gWT.data_ptr(), v0.data_ptr(), W0.data_ptr(), alpha.data_ptr(),
        kappa.data_ptr(), gamma.data_ptr(), coef.data_ptr(), _ptr(reset), vs.data_ptr(), ps.data_ptr(),
        _ptr(ckpt), dv0.data_ptr(), dW0.data_ptr(), dalpha.data_ptr(), dkappa.data_ptr(), dgamma.data_ptr(),
        dcoef.data_ptr(), B, T, N, S, act, C, batched, torch.get_num_threads(),
    )  # fmt: skip
    return dv0, dW0, dalpha, dkappa, dgamma, dcoef


# --------------------------------------------------------------------------------------------------
# Triton backend


def _fwd_triton(v0, W0, alpha, kappa, gamma, coef, reset, act, C, save):
    from metakern.kernels.synapse import metods_forward_triton

    return metods_forward_triton(v0, W0, alpha, kappa, gamma, coef, reset, act, C, save)


def _bwd_triton(gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, act, C):
    from metakern.kernels.synapse import metods_backward_triton

    return metods_backward_triton(gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, act, C)


_FWD = {"reference": _fwd_reference, "cpp": _fwd_cpp, "triton": _fwd_triton}
_BWD = {"reference": _bwd_reference, "cpp": _bwd_cpp, "triton": _bwd_triton}


def _run(v0, W0, alpha, kappa, gamma, coef, reset, activation, checkpoint_every, save):
    backend = _select(v0.device.type)
    # The reference backward recomputes everything with autograd: it saves nothing.
    return _FWD[backend](v0, W0, alpha, kappa, gamma, coef, reset, activation, checkpoint_every,
                         save and backend != "reference")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# torch.library registration


@torch.library.custom_op("metakern::metods_synapse", mutates_args=())
def _metods_op(
    v0: torch.Tensor,
    W0: torch.Tensor,
    alpha: torch.Tensor,
    kappa: torch.Tensor,
    gamma: torch.Tensor,
    coef: torch.Tensor,
    reset: torch.Tensor | None,
    activation: int,
    checkpoint_every: int,
    save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _run(v0, W0, alpha, kappa, gamma, coef, reset, activation, checkpoint_every, save)


@_metods_op.register_fake
def _(v0, W0, alpha, kappa, gamma, coef, reset, activation, checkpoint_every, save):
    B, T, N = v0.shape
    S = kappa.shape[0]
    # The fake kernel cannot know the backend; it describes the compiled backends' saved tensors.
    K = num_checkpoints(T, checkpoint_every) if save else 0
    Ts = T if save else 0
    return (
        torch.empty_like(v0),
        v0.new_empty(B, N, N),
        v0.new_empty(B, Ts, S, N),
        v0.new_empty(B, Ts, S, N),
        v0.new_empty(B, K, N, N),
    )


@torch.library.custom_op("metakern::metods_synapse_backward", mutates_args=())
def _metods_backward_op(
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
    activation: int,
    checkpoint_every: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    backend = _select(v0.device.type)
    if backend != "reference" and vs.shape[1] != v0.shape[1]:
        # Saved by the reference backend (nothing saved) but run on another: recompute with autograd.
        backend = "reference"
    return _BWD[backend](gvS.contiguous(), gWT.contiguous(), v0, W0, alpha, kappa, gamma, coef, reset, vs, ps,
                         ckpt, activation, checkpoint_every)  # fmt: skip


@_metods_backward_op.register_fake
def _(gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, activation, checkpoint_every):
    return tuple(torch.empty_like(t) for t in (v0, W0, alpha, kappa, gamma, coef))


def _backward_twice(ctx, *grads):
    raise RuntimeError(
        "metakern::metods_synapse is differentiable once: its backward (metods_synapse_backward) has no "
        "derivative. For second-order terms use metods_synapse_reference (plain autograd)."
    )


def _no_context(ctx, inputs, output):
    pass


_metods_backward_op.register_autograd(_backward_twice, setup_context=_no_context)


def _setup(ctx, inputs, output):
    v0, W0, alpha, kappa, gamma, coef, reset, activation, checkpoint_every, _ = inputs
    _, _, vs, ps, ckpt = output
    ctx.save_for_backward(v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt)
    ctx.activation = activation
    ctx.checkpoint_every = checkpoint_every
    ctx.mark_non_differentiable(vs, ps, ckpt)


def _backward(ctx, gvS, gWT, _gvs, _gps, _gckpt):
    v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt = ctx.saved_tensors
    if gvS is None:
        gvS = torch.zeros_like(v0)
    if gWT is None:
        gWT = v0.new_zeros(v0.shape[0], v0.shape[2], v0.shape[2])
    dv0, dW0, dalpha, dkappa, dgamma, dcoef = _metods_backward_op(
        gvS, gWT, v0, W0, alpha, kappa, gamma, coef, reset, vs, ps, ckpt, ctx.activation, ctx.checkpoint_every
    )
    return dv0, dW0, dalpha, dkappa, dgamma, dcoef, None, None, None, None


_metods_op.register_autograd(_backward, setup_context=_setup)


# --------------------------------------------------------------------------------------------------
# Public API


def _wants_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def metods_synapse(
    v0: torch.Tensor,
    W0: torch.Tensor,
    alpha: torch.Tensor,
    kappa: torch.Tensor,
    beta: torch.Tensor,
    reset: torch.Tensor | None = None,
    *,
    activation: str = "tanh",
    checkpoint_every: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MetODS dynamic synapses over whole sequences (Algorithm 1 of Chalvidal et al. 2022).

    Args:
        v0: [B, T, N] embedded inputs v^(0) (float32, float64, bfloat16 or float16).
        W0: [B, N, N] or [N, N] initial synaptic weights (float64 for float64 v0, else float32).
        alpha: [N, N] per-synapse plasticity.
        kappa, beta: [S, S+1] mixing coefficients; row s-1 holds inner step s's, column l <= s
            (columns l > s are unused and get zero gradient).
        reset: [B, T] flags; where set, W returns to W0 before step t (episode or trial starts).
        activation: "tanh" (default), "relu" or "identity".
        checkpoint_every: save W every C steps for the backward. Default ceil(N / (2 S)): the
            checkpoints then cost about as much as the saved vectors. ``T`` keeps only W0 (the least
            memory; the backward then recomputes twice per step).

    Returns:
        (v_S [B, T, N] in v0's dtype, W_T [B, N, N] in the compute dtype).
    """
    check_synapse_args(v0, W0, alpha, kappa, beta, reset, activation, checkpoint_every)
    cd = compute_dtype(v0.dtype)
    x = v0 if v0.dtype == cd else v0.to(cd)
    T = v0.shape[1]
    C = default_checkpoint_every(v0.shape[2], kappa.shape[0], T) if checkpoint_every is None else checkpoint_every
    C = min(C, T)
    flags = _reset_flags(reset)
    gamma, coef = synapse_coefficients(beta)
    save = _wants_grad(v0, W0, alpha, kappa, beta)
    args = (x, W0, alpha, kappa, gamma, coef, flags, _ACT_CODES[activation], C, save)
    vS, WT, *_ = _run(*args) if direct_call_ok(x, W0, alpha, kappa, beta) else _metods_op(*args)
    return (vS if vS.dtype == v0.dtype else vS.to(v0.dtype)), WT


def metods_step(
    v: torch.Tensor,
    W: torch.Tensor,
    alpha: torch.Tensor,
    kappa: torch.Tensor,
    beta: torch.Tensor,
    reset: torch.Tensor | None = None,
    *,
    activation: str = "tanh",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step for acting: all S inner steps in one kernel call. v [B, N], W [B, N, N] (the state
    carried between calls), reset [B] (W returns to ``W0`` is the caller's business: pass the
    initial state as W where an episode starts). Returns (v_S [B, N], W_next [B, N, N])."""
    _validate.tensor("v", v, ndim=2, layout="[B, N]", dtypes=V_DTYPES)
    if reset is not None:
        raise ValueError("reset: metods_step carries W between calls; start an episode by passing W0 as W")
    vS, WT = metods_synapse(v.unsqueeze(1), W, alpha, kappa, beta, activation=activation)
    return vS.squeeze(1), WT


def default_checkpoint_every(N: int, S: int, T: int) -> int:
    """The default C = ceil(N / (2 S)) (at most T): one N x N checkpoint per C steps then costs about
    what the 2 S N saved vectors of those C steps cost, so the memory is O(B*T*S*N) with no T*N*N
    term, and the backward recomputes each step's matrix once (segments of C <= 64 steps are
    recomputed in one pass)."""
    return max(1, min(T, -(-N // (2 * S))))


def memory_model_bytes(B: int, T: int, N: int, S: int, C: int | None = None, itemsize: int = 4, threads: int = 1):
    """Bytes the fused op keeps for the backward (saved vectors + checkpoints) plus the backward's
    per-worker scratch, as described in the module docstring."""
    C = default_checkpoint_every(N, S, T) if C is None else min(C, T)
    C2 = C if C <= 64 else math.ceil(math.sqrt(C))
    saved = 2 * B * T * S * N + B * num_checkpoints(T, C) * N * N
    scratch = threads * (-(-C // C2) + C2 + 1) * N * N
    return (saved + scratch) * itemsize
