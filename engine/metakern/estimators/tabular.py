"""Closed-form gradients and Hessian-vector products of estimator objectives for a tabular softmax
policy, in O(B T + S A): no autograd, no T x T or D x D matrix.

The objectives are those of ``metakern.estimators.reference`` (batch means over B trajectories of
T steps, one trajectory per row), evaluated on-policy (the magic boxes equal 1). With
l_t = log pi(a_t | s_t), J depends on theta only through l, so with g = dJ/dl and H_l = d^2J/dl^2:

    grad J   = sum_t g_t grad l_t
    H v      = sum_t y_t grad l_t + sum_t g_t (grad^2 l_t) v,    y = H_l u,  u_t = grad l_t . v

and for the softmax, grad l_t = e_{s_t} (e_{a_t} - pi_{s_t}), u_t = v[s_t, a_t] - <pi_{s_t}, v_{s_t}>,
(grad^2 l_t) v = -e_{s_t} (pi_{s_t} * v_{s_t} - pi_{s_t} <pi_{s_t}, v_{s_t}>). Per estimator
(w_t = gamma^t r_t; the spec's table 1.10, derived there and checked here against autograd):

    dice         g_k = sum_{t>=k} w_t                 y_j = sum_{t>=j} w_t U_t,  U_t = sum_{k<=t} u_k
    loaded_dice  g_k = gamma^k A_k =: a_k             y_j = a_j F_j + R_j - a_j u_j,
                 F_j = lam F_{j-1} + u_j,  R_j = a_j u_j + lam R_{j+1}
    lvc          g_k = gamma^k G_k                    y_j = g_j u_j

On CPU in float64 the C++ kernel (cpp/estimators) makes one or two passes per trajectory and sums
g and y per (s, a) and per s; elsewhere every sum over time is a ``metakern.linear_scan`` and the
per-step terms are gathered and scattered per state (``metakern.use_backend("reference")`` forces
that path on CPU too).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import _backend, _validate
from ..ops.scan import linear_scan

ESTIMATORS = ("dice", "loaded_dice", "lvc")


class Derivatives(NamedTuple):
    value: torch.Tensor  # the objective's value (a scalar)
    grad: torch.Tensor  # [S, A]
    hvp: torch.Tensor  # [S, A]: H v


def _check(theta, states, actions, v, signal) -> None:
    _validate.tensor("theta", theta, ndim=2, layout="[S, A]", contiguous=False)
    for name, t in (("states", states), ("actions", actions)):
        _validate.tensor(name, t, ndim=2, layout="[B, T]", dtypes=(torch.int64, torch.int32), contiguous=False)
        _validate.same_device(name, t, "theta", theta)
    _validate.shape("actions", actions, tuple(states.shape), "[B, T] of states")
    S, A = theta.shape
    _validate.tensor("v", v, ndim=2, layout="[S, A]", contiguous=False)
    _validate.same_dtype("v", v, "theta", theta)
    _validate.shape("v", v, (S, A), "[S, A] of theta")
    name, t = signal
    _validate.tensor(name, t, ndim=2, layout="[B, T]", contiguous=False)
    _validate.same_dtype(name, t, "theta", theta)
    _validate.shape(name, t, tuple(states.shape), "[B, T] of states")


def _check_range(states, actions, S, A) -> None:
    if states.min() < 0 or states.max() >= S:
        raise ValueError(f"states: expected indices in [0, {S}), got values in [{states.min()}, {states.max()}]")
    if actions.min() < 0 or actions.max() >= A:
        raise ValueError(f"actions: expected indices in [0, {A}), got values in [{actions.min()}, {actions.max()}]")


def _reverse_cumsum(x: torch.Tensor) -> torch.Tensor:
    return linear_scan(x.contiguous(), 1.0, reverse=True)


def tabular_derivatives(
    estimator: str,
    theta: torch.Tensor,
    states: torch.Tensor,
    actions: torch.Tensor,
    v: torch.Tensor,
    signal: torch.Tensor,
    gamma: float,
    lam: float = 1.0,
) -> Derivatives:
    """Value, gradient and Hessian-vector product of an estimator's objective for the tabular
    softmax policy pi = softmax(theta) (theta [S, A]), on B trajectories (states, actions [B, T]).

    ``signal`` is the estimator's per-step input: rewards r_t for ``"dice"``, advantages A_t for
    ``"loaded_dice"`` (with ``lam``), returns G_t for ``"lvc"``; each is weighted by gamma^t, as in
    ``metakern.estimators.reference``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: expected one of {ESTIMATORS}, got {estimator!r}")
    _check(theta, states, actions, v, ("signal", signal))
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    lam = _validate.real("lam", lam, low=0.0, high=1.0)
    B, T = states.shape
    S, A = theta.shape
    if theta.device.type == "cpu" and theta.dtype == torch.float64 and S * A < 2**31:
        if _backend.select("estimators", "cpu", preference=("cpp",)) == "cpp":
            return _derivatives_cpp(estimator, theta, v, states, actions, signal, gamma, lam)
    _check_range(states, actions, S, A)  # the C++ kernel checks the indices as it reads them
    pi = torch.softmax(theta, dim=-1)  # [S, A]
    pv = (pi * v).sum(-1)  # <pi_s, v_s>, [S]
    s_flat = states.long().reshape(-1)
    sa_flat = s_flat * A + actions.long().reshape(-1)  # index of (s_t, a_t) in theta.reshape(-1)
    u = (v.reshape(-1).take(sa_flat) - pv.take(s_flat)).reshape(B, T)  # grad l_t . v
    discount = gamma ** torch.arange(T, dtype=theta.dtype, device=theta.device)
    weighted = (discount * signal).contiguous()  # gamma^t * signal_t

    if estimator == "dice":
        value = weighted.sum(1).mean()
        g = _reverse_cumsum(weighted)
        y = _reverse_cumsum(weighted * torch.cumsum(u, dim=1))
    elif estimator == "loaded_dice":
        value = torch.zeros((), dtype=theta.dtype, device=theta.device)  # box differences are 0 in value
        g = weighted
        F = linear_scan(u.contiguous(), lam)
        au = (weighted * u).contiguous()
        y = weighted * F + linear_scan(au, lam, reverse=True) - au
    else:  # lvc
        value = weighted.sum(1).mean()
        g = weighted
        y = weighted * u

    def per_state(c: torch.Tensor) -> torch.Tensor:
        return torch.bincount(s_flat, weights=c.reshape(-1), minlength=S)

    def at_sum(c: torch.Tensor) -> torch.Tensor:
        return torch.bincount(sa_flat, weights=c.reshape(-1), minlength=S * A).reshape(S, A)

    return _assemble(value, at_sum(g), per_state(g), at_sum(y), per_state(y), pi, v, pv, B)


def _assemble(value, at_g, st_g, at_y, st_y, pi, v, pv, B) -> Derivatives:
    """grad and H v from the per-(s, a) and per-s sums of g and y: sum_t c_t grad l_t is the sum of c
    at each (s, a) minus the sum of c over the visits of s times pi_s (module docstring)."""
    grad = at_g - st_g[:, None] * pi
    second = st_g[:, None] * (pi * v - pi * pv[:, None])  # -sum_t g_t (grad^2 l_t) v
    hvp = at_y - st_y[:, None] * pi - second
    return Derivatives(value, grad / B, hvp / B)


_CODES = {"dice": 0, "loaded_dice": 1, "lvc": 2}


def _derivatives_cpp(estimator, theta, v, states, actions, signal, gamma, lam) -> Derivatives:
    """One kernel call: softmax, both passes, per-(s, a) sums and the assembly (as ``_assemble``)."""
    B, T = states.shape
    S, A = theta.shape
    idx32 = states.dtype == torch.int32 and actions.dtype == torch.int32  # int32 is read as is
    states, actions = (states, actions) if idx32 else (states.long(), actions.long())
    states, actions = states.contiguous(), actions.contiguous()
    theta, v, signal = theta.contiguous(), v.contiguous(), signal.contiguous()
    grad, hvp, value = torch.empty_like(theta), torch.empty_like(theta), theta.new_empty(())
    bad = _backend.cpp_module().tabular_estimator_derivatives(
        _CODES[estimator], theta.data_ptr(), v.data_ptr(), states.data_ptr(), actions.data_ptr(), idx32,
        signal.data_ptr(), B, T, S, A, gamma, lam, grad.data_ptr(), hvp.data_ptr(), value.data_ptr(),
        torch.get_num_threads(),
    )  # fmt: skip
    if bad >= 0:
        b, t = divmod(bad, T)
        s_bt, a_bt = int(states[b, t]), int(actions[b, t])
        which = "states" if not 0 <= s_bt < S else "actions"
        bound, got = (S, s_bt) if which == "states" else (A, a_bt)
        raise ValueError(f"{which}: expected indices in [0, {bound}), got {got} at [{b}, {t}]")
    return Derivatives(value, grad, hvp)
