"""Fused meta-gradient estimator ops on per-step log-probabilities, differentiable twice.

Drop-in replacements for the objectives of ``metakern.estimators.reference`` (same positional
arguments, same values and derivatives), with done masks, a choice of reduction, and closed-form
derivatives instead of an autograd tape:

    maml_surrogate, e_maml_term, dice, dice_baseline, loaded_dice, lvc, off_policy_dice
        torch.library ops ``metakern::estimator_value`` -> ``metakern::estimator_grad`` ->
        ``metakern::estimator_hvp``. The value's backward is the closed-form log-prob gradient g
        (an op); g's backward is the closed-form Hessian-vector product H u (an op), each O(B T):
        H has the structure H[j, k] = h_max(j,k) lam^|j-k| + diag(e) (cpp/estimators/estimator_ops.h
        lists h, lam and e per estimator), so H u is one forward and one reverse pass and no T x T
        matrix is ever formed. A third derivative raises an error instead of being silently wrong.
        Kernels: C++ (CPU, float32/float64), Triton (CUDA), and a ``reference`` composite of
        ``metakern.linear_scan`` calls on any device.
    taypo, doubly_robust (DR / V-trace / truncated IS)
        compositions of ``metakern.linear_scan``: TayPO-K is K-1 episode-reset cumulative sums (the
        elementary-symmetric recurrence, O(K T)), DR one cumulative sum of log-ratios. The scan's backward is itself a
        scan, so their gradients and Hessian-vector products are O(K B T) scans on every backend.

Trajectories: ``logp`` is [B, T]; a row may hold several episodes, ``dones[b, t]`` true ending one
after step t: discounts restart (gamma^(t - episode start)), cumulative log-probs and returns do not
cross episodes, and a row's objective is the sum over its episodes. Padding steps with zero signal
(and zero log-prob) contribute nothing, so ragged batches are padded rows.

Numerics: on-policy magic boxes are exactly 1 in value and need no exponentials. Where a ratio is
exponentiated, the exponent is clamped at ``max_log_weight`` / ``max_log_ratio`` (default 30: weights up
to e^30 ~ 1.1e13, far from float32's e^88.7); a clamped weight is constant, so its derivative is 0, as
for ``torch.clamp``. Off-policy DiCE clamps its cumulative log-weight c_t - c^mu_t; DR clamps its
cumulative log trace L_t + log rho_t (the recursion's product of ratios); TayPO-K clamps each log rho_t,
so its products of up to K ratios stay below e^(30 K) (finite in float32 for K <= 2 at the default;
lower ``max_log_ratio`` for larger K in float32). The reference objectives take the same arguments
(the reference DR clamps per step only).

Gradients flow to ``logp`` only. Behaviour log-probabilities are data (detached, as in the papers);
so are the MAML surrogate's advantages. For the other estimators a signal that requires grad is an
error (its mixed derivatives are not implemented): detach it, or use the reference objective.
"""

from __future__ import annotations

import math

import torch

from .. import _backend, _validate
from ..ops.scan import direct_call_ok, linear_scan, shifted

_KINDS = ("maml", "dice", "dice_baseline", "loaded_dice", "lvc", "off_policy_dice")
_CODES = {k: i for i, k in enumerate(_KINDS)}
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
_REDUCTIONS = ("mean", "sum", "none")
DEFAULT_MAX_LOG = 30.0


# ----------------------------------------------------------------------------------------------
# Kernels: (value [B] | None, g [B, T] | None, y = H u [B, T] | None) per backend.


def _continues(dones: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_fwd, a_rev) as floats: a_fwd[t] = 1 if step t continues step t-1's episode, a_rev[t] = 1 if
    step t+1 continues step t's (the coefficients of forward and reverse episode-reset scans)."""
    if dones is None:
        ones = torch.ones_like(like)
        return ones, ones
    cont = (~dones).to(like.dtype)
    return shifted(cont, torch.ones_like(cont[:, 0]), 1, later=False), cont


def _discount(a_fwd: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma^(t - start of t's episode): d_0 = 1, d_t = gamma d_{t-1} within an episode, 1 at a start."""
    first = (1 - a_fwd).contiguous()
    first[:, 0] = 1
    return linear_scan(first, (gamma * a_fwd).contiguous())


def _terms_reference(kind, logp, signal, values, behaviour, dones, u, want_value, want_g, gamma, lam, cap):
    a_fwd, a_rev = _continues(dones, logp)
    d = _discount(a_fwd, gamma)
    e = None
    if kind == "off_policy_dice":
        c = linear_scan((logp - behaviour).contiguous(), a_fwd)
        w = torch.exp(c.clamp(max=cap)) * d * signal
        value = w.sum(1)
        h_in = torch.where(c > cap, torch.zeros_like(w), w)
    else:
        h_in = d * signal
        value = {
            "maml": (h_in * logp).sum(1),
            "loaded_dice": torch.zeros_like(h_in[:, 0]),
        }.get(kind)
        if value is None:
            value = h_in.sum(1)
        if kind == "dice_baseline":
            e = -d * values
    cumulative = kind in ("dice", "dice_baseline", "off_policy_dice")
    h = linear_scan(h_in.contiguous(), a_rev, reverse=True) if cumulative else h_in
    g = h + e if e is not None else h
    y = None
    if u is not None:
        if kind == "maml":
            y = torch.zeros_like(u)
        else:
            lam_in = lam if kind == "loaded_dice" else (1.0 if cumulative else 0.0)
            F = linear_scan(u.contiguous(), (lam_in * a_fwd).contiguous())
            R = linear_scan((h * u).contiguous(), (lam_in * a_rev).contiguous(), reverse=True)
            y = h * (F - u) + R
            if e is not None:
                y = y + e * u
    return (value if want_value else None), (g if want_g else None), y


def _terms_cpp(kind, logp, signal, values, behaviour, dones, u, want_value, want_g, gamma, lam, cap):
    B, T = logp.shape
    value = logp.new_empty(B) if want_value else None
    g = torch.empty_like(logp) if want_g else None
    y = torch.empty_like(logp) if u is not None else None

    def ptr(t):
        return 0 if t is None else t.data_ptr()

    _backend.cpp_module().estimator_terms(
        _DTYPE_CODES[logp.dtype], _CODES[kind], logp.data_ptr(), signal.data_ptr(), ptr(values), ptr(behaviour),
        ptr(dones), ptr(u), ptr(value), ptr(g), ptr(y), B, T, gamma, lam, cap, torch.get_num_threads(),
    )  # fmt: skip
    return value, g, y


def _terms_triton(kind, logp, signal, values, behaviour, dones, u, want_value, want_g, gamma, lam, cap):
    from metakern.kernels.estimators import estimator_terms_triton

    return estimator_terms_triton(kind, logp, signal, values, behaviour, dones, u, want_value, want_g, gamma, lam, cap)


_IMPLS = {"reference": _terms_reference, "cpp": _terms_cpp, "triton": _terms_triton}
_PREFERENCE = {"cpu": ("cpp",), "cuda": ("triton",)}


def _terms(kind, logp, signal, values, behaviour, dones, u, want_value, want_g, gamma, lam, cap):
    backend = _backend.select(f"estimator {kind}", logp.device.type, _PREFERENCE.get(logp.device.type, ()))
    if backend not in _IMPLS:
        raise RuntimeError(
            f"metakern: the estimator ops have no {backend!r} kernel (backends: {tuple(_IMPLS)}); "
            "use metakern.use_backend('triton') or 'auto' on CUDA"
        )
    args = [t.contiguous() if t is not None else None for t in (logp, signal, values, behaviour, dones, u)]
    return _IMPLS[backend](kind, *args, want_value, want_g, gamma, lam, cap)


# ----------------------------------------------------------------------------------------------
# torch.library ops: value -> grad -> hvp.


@torch.library.custom_op("metakern::estimator_value", mutates_args=())
def _value_op(
    kind: str,
    logp: torch.Tensor,
    signal: torch.Tensor,
    values: torch.Tensor | None,
    behaviour: torch.Tensor | None,
    dones: torch.Tensor | None,
    gamma: float,
    lam: float,
    cap: float,
) -> torch.Tensor:
    _check(kind, logp, signal, values, behaviour, dones)
    return _terms(kind, logp, signal, values, behaviour, dones, None, True, False, gamma, lam, cap)[0]


@torch.library.custom_op("metakern::estimator_grad", mutates_args=())
def _grad_op(
    kind: str,
    logp: torch.Tensor,
    signal: torch.Tensor,
    values: torch.Tensor | None,
    behaviour: torch.Tensor | None,
    dones: torch.Tensor | None,
    gamma: float,
    lam: float,
    cap: float,
) -> torch.Tensor:
    _check(kind, logp, signal, values, behaviour, dones)
    return _terms(kind, logp, signal, values, behaviour, dones, None, False, True, gamma, lam, cap)[1]


@torch.library.custom_op("metakern::estimator_hvp", mutates_args=())
def _hvp_op(
    kind: str,
    logp: torch.Tensor,
    signal: torch.Tensor,
    values: torch.Tensor | None,
    behaviour: torch.Tensor | None,
    dones: torch.Tensor | None,
    gamma: float,
    lam: float,
    cap: float,
    u: torch.Tensor,
) -> torch.Tensor:
    _check(kind, logp, signal, values, behaviour, dones)
    _validate.tensor("u", u, ndim=2, layout="[B, T]", contiguous=False)
    _validate.same_dtype("u", u, "logp", logp)
    _validate.shape("u", u, tuple(logp.shape), "[B, T] of logp")
    return _terms(kind, logp, signal, values, behaviour, dones, u, False, False, gamma, lam, cap)[2]


@_value_op.register_fake
def _(kind, logp, signal, values, behaviour, dones, gamma, lam, cap):
    return logp.new_empty(logp.shape[0])


@_grad_op.register_fake
def _(kind, logp, signal, values, behaviour, dones, gamma, lam, cap):
    return torch.empty_like(logp)


@_hvp_op.register_fake
def _(kind, logp, signal, values, behaviour, dones, gamma, lam, cap, u):
    return torch.empty_like(logp)


def _save(ctx, inputs, output):
    kind, logp, signal, values, behaviour, dones, gamma, lam, cap = inputs[:9]
    ctx.kind, ctx.gamma, ctx.lam, ctx.cap = kind, gamma, lam, cap
    ctx.has = tuple(t is not None for t in (values, behaviour, dones))
    ctx.save_for_backward(logp, signal, *(t for t in (values, behaviour, dones) if t is not None))


def _saved(ctx) -> tuple:
    logp, signal, *rest = ctx.saved_tensors
    rest = iter(rest)
    values, behaviour, dones = (next(rest) if has else None for has in ctx.has)
    return ctx.kind, logp, signal, values, behaviour, dones, ctx.gamma, ctx.lam, ctx.cap


def _data_only(ctx, op: str) -> None:
    """Gradients reach logp only: a signal that needs one is an error, not a silent zero."""
    names = ("signal", "values", "behaviour")
    for name, needs in zip(names, ctx.needs_input_grad[2:5], strict=True):
        if needs and name != "behaviour" and not (name == "signal" and ctx.kind == "maml"):
            raise RuntimeError(
                f"metakern::{op} ({ctx.kind}) differentiates w.r.t. logp only, but {name} requires grad; "
                "detach it or use metakern.estimators.reference"
            )


def _value_backward(ctx, grad_value):
    _data_only(ctx, "estimator_value")
    g = _grad_op(*_saved(ctx))
    return None, grad_value[:, None] * g, None, None, None, None, None, None, None


def _grad_backward(ctx, grad_g):
    _data_only(ctx, "estimator_grad")
    y = _hvp_op(*_saved(ctx), grad_g.contiguous())
    return None, y, None, None, None, None, None, None, None


def _hvp_backward(ctx, grad_y):
    raise RuntimeError(
        "metakern estimator ops are differentiable twice (value, gradient, Hessian-vector product); "
        "a third derivative is not implemented: use metakern.estimators.reference for higher orders"
    )


_value_op.register_autograd(_value_backward, setup_context=_save)
_grad_op.register_autograd(_grad_backward, setup_context=_save)
_hvp_op.register_autograd(_hvp_backward)


# ----------------------------------------------------------------------------------------------
# Validation and the public functions.


def _check(kind, logp, signal, values, behaviour, dones) -> None:
    if kind not in _CODES:
        raise ValueError(f"kind: expected one of {_KINDS}, got {kind!r}")
    _validate.tensor("logp", logp, ndim=2, layout="[B, T]", dtypes=(torch.float32, torch.float64), contiguous=False)
    for name, t in (("signal", signal), ("values", values), ("behaviour", behaviour)):
        if t is None:
            continue
        _validate.tensor(name, t, ndim=2, layout="[B, T]", contiguous=False)
        _validate.same_device(name, t, "logp", logp)
        _validate.same_dtype(name, t, "logp", logp)
        _validate.shape(name, t, tuple(logp.shape), "[B, T] of logp")
    if kind == "dice_baseline" and values is None:
        raise ValueError("dice_baseline needs values")
    if kind == "off_policy_dice" and behaviour is None:
        raise ValueError("off_policy_dice needs behaviour log-probabilities")
    if dones is not None:
        _validate.tensor("dones", dones, ndim=2, layout="[B, T]", dtypes=(torch.bool,), contiguous=False)
        _validate.same_device("dones", dones, "logp", logp)
        _validate.shape("dones", dones, tuple(logp.shape), "[B, T] of logp")


def _prepare(logp, named: dict, dones):
    """Validate the public arguments; 16-bit log-probs compute in float32 (cast back at the end)."""
    _validate.tensor("logp", logp, ndim=2, layout="[B, T]", contiguous=False)
    work = torch.float32 if logp.dtype in (torch.float16, torch.bfloat16) else logp.dtype
    if work not in _DTYPE_CODES:
        raise TypeError(f"logp: expected a floating-point tensor, got {logp.dtype}")
    out = {}
    for name, t in named.items():
        _validate.tensor(name, t, ndim=2, layout="[B, T]", contiguous=False)
        _validate.same_device(name, t, "logp", logp)
        _validate.shape(name, t, tuple(logp.shape), "[B, T] of logp")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
        out[name] = t.to(work)
    if dones is not None:
        if not isinstance(dones, torch.Tensor):
            raise TypeError(f"dones: expected a tensor or None, got {type(dones).__name__}")
        _validate.tensor("dones", dones, ndim=2, layout="[B, T]", dtypes=None, contiguous=False)
        _validate.same_device("dones", dones, "logp", logp)
        _validate.shape("dones", dones, tuple(logp.shape), "[B, T] of logp")
        dones = dones if dones.dtype == torch.bool else dones != 0
    return logp.to(work), out, dones


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(per_row: torch.Tensor, reduction: str, dtype: torch.dtype) -> torch.Tensor:
    out = per_row.mean() if reduction == "mean" else per_row.sum() if reduction == "sum" else per_row
    return out.to(dtype)


def _objective(kind, logp, signal_name, signal, gamma, lam=1.0, *, values=None, behaviour=None, dones=None,
               cap=DEFAULT_MAX_LOG, reduction="mean") -> torch.Tensor:  # fmt: skip
    _check_reduction(reduction)
    named = {signal_name: signal}
    if values is not None:
        named["values"] = values
    if behaviour is not None:
        named["behaviour_logp"] = behaviour
    dtype = logp.dtype
    work_logp, named, dones = _prepare(logp, named, dones)
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    lam = _validate.real("lam", lam, low=0.0, high=1.0)
    cap = _validate.real("max_log_weight", cap)
    sig = named[signal_name]
    if kind == "maml":
        sig = sig.detach()
    elif torch.is_grad_enabled() and sig.requires_grad:
        raise ValueError(
            f"{signal_name} requires grad, but the fused {kind} op differentiates w.r.t. logp only: pass "
            f"{signal_name}.detach(), or use metakern.estimators.reference.{kind} to differentiate through it"
        )
    vals = named.get("values")
    if vals is not None and torch.is_grad_enabled() and vals.requires_grad:
        raise ValueError(
            "values requires grad, but the fused dice_baseline op differentiates w.r.t. logp only: pass "
            "values.detach() (train the critic with its own loss)"
        )
    beh = named.get("behaviour_logp")
    beh = beh.detach() if beh is not None else None
    args = (kind, work_logp, sig, vals, beh, dones, gamma, lam, cap)
    if direct_call_ok(work_logp, sig, vals, beh, dones):
        per_row = _terms(*args[:6], None, True, False, gamma, lam, cap)[0]
    else:
        per_row = _value_op(*args)
    return _reduce(per_row, reduction, dtype)


def maml_surrogate(logp, advantages, gamma, *, dones=None, reduction="mean"):
    """MAML-RL / REINFORCE surrogate sum_t gamma^t stop_grad(A_t) l_t: the policy gradient, and a
    Hessian with only ProMP's H2 term (zero in log-prob space). ``advantages`` are detached."""
    return _objective("maml", logp, "advantages", advantages, gamma, dones=dones, reduction=reduction)


def e_maml_term(logp, post_update_returns, *, dones=None, reduction="mean"):
    """E-MAML's exploration term (Stadie et al. 2018; ProMP's formulation II): sum_t l_t of the
    pre-update trajectories times stop_grad(R'), the return of the post-update trajectories.
    ``post_update_returns`` is a number, a [B] tensor (one per pre-update trajectory) or [B, T]."""
    _validate.tensor("logp", logp, ndim=2, layout="[B, T]", contiguous=False)
    R = post_update_returns
    if not isinstance(R, torch.Tensor):
        R = torch.tensor(_validate.real("post_update_returns", R), dtype=logp.dtype, device=logp.device)
    elif R.is_complex() or R.dtype == torch.bool:
        raise TypeError(f"post_update_returns: expected a real tensor, got {R.dtype}")
    _validate.same_device("post_update_returns", R, "logp", logp)
    if R.ndim == 1:
        _validate.shape("post_update_returns", R, (logp.shape[0],), "[B] of logp")
        R = R[:, None]
    elif R.ndim == 2:
        _validate.shape("post_update_returns", R, tuple(logp.shape), "[B, T] of logp")
    elif R.ndim != 0:
        raise ValueError(f"post_update_returns: expected a number, [B] or [B, T], got shape {tuple(R.shape)}")
    R = R.detach().to(logp.dtype).expand(logp.shape).contiguous()
    return _objective("maml", logp, "post_update_returns", R, 1.0, dones=dones, reduction=reduction)


def dice(logp, rewards, gamma, *, dones=None, reduction="mean"):
    """DiCE (Foerster et al. 2018): sum_t box(c_t) gamma^t r_t; unbiased derivatives of every order
    (the op provides two). g_k = sum_{t>=k} gamma^t r_t, H[j, k] = g_max(j,k)."""
    return _objective("dice", logp, "rewards", rewards, gamma, dones=dones, reduction=reduction)


def dice_baseline(logp, rewards, values, gamma, *, dones=None, reduction="mean"):
    """DiCE with Mao et al.'s any-order baseline: DiCE + sum_t (1 - box(l_t)) gamma^t V_t."""
    return _objective("dice_baseline", logp, "rewards", rewards, gamma, values=values, dones=dones, reduction=reduction)


def loaded_dice(logp, advantages, gamma, lam, *, dones=None, reduction="mean"):
    """Loaded DiCE(lam) (Farquhar et al. 2019): sum_t gamma^t A_t (box(w_t) - box(w_t - l_t)),
    w_t = lam w_{t-1} + l_t. g = gamma^t A_t, H[j, k] = g_max(j,k) lam^|j-k|."""
    return _objective("loaded_dice", logp, "advantages", advantages, gamma, lam, dones=dones, reduction=reduction)


def lvc(logp, returns, gamma, *, dones=None, reduction="mean"):
    """LVC (ProMP): sum_t box(l_t) gamma^t G_t. Exact gradient, diagonal (biased) Hessian."""
    return _objective("lvc", logp, "returns", returns, gamma, dones=dones, reduction=reduction)


def off_policy_dice(logp, behaviour_logp, rewards, gamma, *, dones=None, max_log_weight=DEFAULT_MAX_LOG,
                    reduction="mean"):  # fmt: skip
    """Off-policy DiCE (Liu et al. 2022): sum_t exp(c_t - c^mu_t) gamma^t r_t with c, c^mu the
    cumulative current and behaviour log-probs; the log-weight is clamped at ``max_log_weight``."""
    return _objective("off_policy_dice", logp, "rewards", rewards, gamma, behaviour=behaviour_logp, dones=dones,
                      cap=max_log_weight, reduction=reduction)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Scan compositions: TayPO-K and DR / V-trace.


def _ratio(logp, behaviour, cap):
    return torch.exp(torch.clamp(logp - behaviour.detach(), max=cap))


def taypo(logp, behaviour_logp, returns, values, gamma, order, *, dones=None, max_log_ratio=DEFAULT_MAX_LOG,
          reduction="mean"):  # fmt: skip
    """TayPO-K (Tang et al. 2021): sum_{k=1..K} U_k with x_t = rho_t - 1,
    U_k = sum_{t_1<...<t_k} gamma^{t_k} prod_i x_{t_i} stop_grad(G_{t_k} - V_{t_k}), by the
    elementary-symmetric recurrence E_k(t) = E_k(t-1) + x_t E_{k-1}(t-1): K - 1 episode-reset
    ``linear_scan`` calls, O(K T), differentiable to any order. log rho is clamped at ``max_log_ratio``."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order: expected a positive int, got {order!r}")
    _check_reduction(reduction)
    dtype = logp.dtype
    named = {"behaviour_logp": behaviour_logp, "returns": returns, "values": values}
    logp, named, dones = _prepare(logp, named, dones)
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    cap = _validate.real("max_log_ratio", max_log_ratio)
    a_fwd, _ = _continues(dones, logp)
    d = _discount(a_fwd, gamma)
    adv = (d * (named["returns"] - named["values"])).detach()
    x = _ratio(logp, named["behaviour_logp"], cap) - 1
    entering = torch.ones_like(x)  # E_{k-1} entering step t: 1 for k - 1 = 0
    total_weight = entering
    for _ in range(1, order):
        E = linear_scan((x * entering).contiguous(), a_fwd)  # E_k(t) within the episode
        entering = shifted(E, torch.zeros_like(E[:, 0]), 1, later=False) * a_fwd
        total_weight = total_weight + entering
    return _reduce((adv * x * total_weight).sum(1), reduction, dtype)


def doubly_robust(logp, behaviour_logp, rewards, values, gamma, *, rho_max=math.inf, c_max=math.inf, dones=None,
                  max_log_ratio=DEFAULT_MAX_LOG, reduction="mean"):  # fmt: skip
    """Tang et al.'s off-policy evaluation recursion (Alg. 2), summed over episode starts:
    v_t = V_t + min(rho_t, rho_max) (r_t + gamma V_{t+1} - V_t) + gamma min(rho_t, c_max) (v_{t+1} - V_{t+1}).
    No truncation: doubly robust (= Loaded DiCE(1)); V = 0 too: step-wise IS (= DiCE);
    rho_max = c_max = 1: V-trace / truncated IS.

    Computed in log space: v_start - V_start = sum_t gamma^(t - start) exp(L_t + log rho_bar_t) delta_t with
    L_t = sum_{start <= s < t} log c_bar_s (one episode-reset ``linear_scan``), and each exponent clamped at
    ``max_log_ratio``: the recursion's products of ratios cannot overflow (a clamped weight is constant,
    derivative 0). The reference (``estimators.reference.doubly_robust``) clamps the same way; where
    nothing is clamped both are the recursion above exactly."""
    _check_reduction(reduction)
    dtype = logp.dtype
    named = {"behaviour_logp": behaviour_logp, "rewards": rewards, "values": values}
    logp, named, dones = _prepare(logp, named, dones)
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    rho_max = _validate.real("rho_max", rho_max, low=0.0)
    c_max = _validate.real("c_max", c_max, low=0.0)
    cap = _validate.real("max_log_ratio", max_log_ratio)
    log_rho = logp - named["behaviour_logp"].detach()

    def log_clipped(bar):
        return torch.clamp(log_rho, max=min(cap, math.log(bar) if bar > 0 else -math.inf))

    a_fwd, a_rev = _continues(dones, logp)
    d = _discount(a_fwd, gamma)
    log_c = log_clipped(c_max)
    L = linear_scan((shifted(log_c, torch.zeros_like(log_c[:, 0]), 1, later=False) * a_fwd).contiguous(), a_fwd)
    weight = torch.exp(torch.clamp(L + log_clipped(rho_max), max=cap))
    V, r = named["values"], named["rewards"]
    V_next = shifted(V, torch.zeros_like(V[:, 0]), 1, later=True) * a_rev
    delta = r + gamma * V_next - V
    starts = 1 - a_fwd
    starts[:, 0] = 1
    return _reduce((starts * V + d * weight * delta).sum(1), reduction, dtype)
