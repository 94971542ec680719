"""Returns and advantages for RL, each one reverse linear scan (``metakern.linear_scan``).

Conventions, for ``[B, T]`` tensors of B sequences of T steps (or ``[T, B]`` with
``time_major=True``, the layout of rollout buffers and the fastest one; every [B, T]/[T, B] input
then follows it, and the indices below read ``[t, :]``):

* ``rewards[:, t]`` is the reward received after the action at step t.
* ``dones[:, t]`` (terminated) marks that the episode reached a terminal state after step t:
  nothing after it is bootstrapped.
* ``truncations[:, t]`` marks that the episode was cut after step t (a time limit) although the
  state was not terminal. Step t + 1 then belongs to a new episode, so the return does not flow
  across the cut; instead, if ``final_values[:, t]`` (the value of the final observation the cut
  episode reached) is given, it is bootstrapped from; without it the cut acts like a termination.
* ``bootstrap`` (``[B]``) is the value of the state after the last step, used unless step
  T - 1 ended the episode.
* masks may be bool, integer or float tensors (constants: they are not differentiated); values,
  rewards, bootstrap and final_values share one floating dtype and device. A step both terminated
  and truncated counts as terminated.
* bf16/fp16 inputs are computed on in float32 (discounts like 0.99 are not representable in 16
  bits); results come back in the inputs' dtype.

Every function is differentiable (and twice differentiable) in its floating inputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import _validate
from .ops.gae import gae_op
from .ops.scan import _layout, _sizes, coefficient_dtype, linear_scan, shifted


class GAE(NamedTuple):
    advantages: torch.Tensor
    returns: torch.Tensor  # advantages + values: the value-function regression target


class VTrace(NamedTuple):
    vs: torch.Tensor  # v-trace value targets
    pg_advantages: torch.Tensor  # rho_t * (r_t + gamma * vs_{t+1} - V(x_t))
    clipped_rhos: torch.Tensor  # min(rho_bar, pi/mu) per step


def _floating(name: str, t: object, like: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    t = _validate.tensor(name, t, ndim=len(shape), layout=what)
    _validate.same_device(name, t, "rewards", like)
    _validate.same_dtype(name, t, "rewards", like)
    _validate.shape(name, t, shape, what)
    return t


def _mask(name: str, m: object, rewards: torch.Tensor) -> torch.Tensor | None:
    """The mask as a contiguous tensor of the working dtype (see ``_work``)."""
    if m is None:
        return None
    m = _validate.tensor(name, m, ndim=2, layout="(the layout of rewards)", dtypes=None, contiguous=False)
    if m.is_complex():
        raise TypeError(f"{name}: expected a bool, integer or real tensor, got {m.dtype}")
    _validate.same_device(name, m, "rewards", rewards)
    _validate.shape(name, m, tuple(rewards.shape), "of rewards")
    return m.detach().to(coefficient_dtype(rewards.dtype)).contiguous()  # masks are constants


class _Episodes(NamedTuple):
    cont: torch.Tensor | None  # 1 where the return flows from t+1 into t, else 0 (None: always 1)
    cut_value: torch.Tensor | None  # truncations * final_values (None: nothing to add)


def _episodes(rewards, dones, truncations, final_values) -> _Episodes:
    d = _mask("dones", dones, rewards)
    tr = _mask("truncations", truncations, rewards)
    if final_values is not None:
        if tr is None:
            raise ValueError("final_values: given without truncations; it is only used at truncated steps")
        final_values = _floating("final_values", final_values, rewards, tuple(rewards.shape), "the shape of rewards")
    cont = None
    if d is not None:
        cont = 1 - d
    if tr is not None:
        cont = (1 - tr) if cont is None else cont * (1 - tr)
    cut = None
    if final_values is not None:  # a step both terminated and truncated counts as terminated
        cut = (tr if d is None else tr * (1 - d)) * _work(final_values)
    return _Episodes(cont, cut)


def _work(t: torch.Tensor) -> torch.Tensor:
    """Inputs are computed on in float32 when they are bf16/fp16, so that discounts such as 0.99 and
    intermediate sums are not rounded to 16 bits; results are cast back to the inputs' dtype."""
    return t.to(coefficient_dtype(t.dtype))


def _next_values(values: torch.Tensor, bootstrap: torch.Tensor | None, time_major: bool) -> torch.Tensor:
    """V(s_{t+1}) at every step: values shifted one step earlier in time, bootstrap (or 0) last."""
    dim = 0 if time_major else 1
    last = bootstrap if bootstrap is not None else values.new_zeros(values.shape[1 - dim])
    return shifted(values, last, dim, later=True)


def _bootstrap(bootstrap, rewards, time_major: bool) -> torch.Tensor | None:
    if bootstrap is None:
        return None
    B = _sizes(rewards, time_major)[0]
    return _work(_floating("bootstrap", bootstrap, rewards, (B,), "[B]"))


def _mul(m: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    return t if m is None else m * t


def _add(t: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    return t if extra is None else t + extra


class _Rollout(NamedTuple):
    """Validated inputs in the working dtype (float32 for 16-bit inputs)."""

    rewards: torch.Tensor
    values: torch.Tensor | None
    ep: _Episodes
    bootstrap: torch.Tensor | None
    dtype: torch.dtype  # the inputs' dtype, for the results


def _prepare(rewards, values, dones, truncations, bootstrap, final_values, time_major: bool) -> _Rollout:
    if not isinstance(time_major, bool):
        raise TypeError(f"time_major: expected a bool, got {type(time_major).__name__}")
    rewards = _validate.tensor("rewards", rewards, ndim=2, layout=_layout(time_major))
    if values is not None:
        values = _work(_floating("values", values, rewards, tuple(rewards.shape), f"{_layout(time_major)} of rewards"))
    ep = _episodes(rewards, dones, truncations, final_values)
    return _Rollout(_work(rewards), values, ep, _bootstrap(bootstrap, rewards, time_major), rewards.dtype)


def _decay(factor: float, ep: _Episodes) -> torch.Tensor | float:
    """Per-step scan coefficient: ``factor`` where the return flows from t+1 into t, else 0."""
    return factor if ep.cont is None else factor * ep.cont


def discounted_returns(
    rewards: torch.Tensor,
    gamma: float,
    *,
    dones: torch.Tensor | None = None,
    truncations: torch.Tensor | None = None,
    bootstrap: torch.Tensor | None = None,
    final_values: torch.Tensor | None = None,
    time_major: bool = False,
) -> torch.Tensor:
    """Discounted returns G_t = r_t + gamma * (1 - done_t) * G_{t+1}, G_T = bootstrap.

    At a truncated step, G_t = r_t + gamma * final_values[:, t] (or r_t without final_values).
    """
    ro = _prepare(rewards, None, dones, truncations, bootstrap, final_values, time_major)
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    x = _add(ro.rewards, None if ro.ep.cut_value is None else gamma * ro.ep.cut_value)
    y = linear_scan(x, _decay(gamma, ro.ep), ro.bootstrap, reverse=True, time_major=time_major)
    return y.to(ro.dtype)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    lam: float,
    *,
    dones: torch.Tensor | None = None,
    truncations: torch.Tensor | None = None,
    bootstrap: torch.Tensor | None = None,
    final_values: torch.Tensor | None = None,
    time_major: bool = False,
) -> GAE:
    """Generalised advantage estimation (Schulman et al. 2016).

    delta_t = r_t + gamma * V_next_t - V(s_t), A_t = delta_t + gamma * lam * (1 - end_t) * A_{t+1},
    where V_next_t is values[:, t+1] (bootstrap at t = T-1), 0 after a termination and
    final_values[:, t] after a truncation. Returns (advantages, returns = advantages + values).
    """
    ro = _prepare(rewards, values, dones, truncations, bootstrap, final_values, time_major)
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    lam = _validate.real("lam", lam, low=0.0, high=1.0)
    adv, ret = gae_op(ro.rewards, ro.values, ro.ep.cont, ro.ep.cut_value, ro.bootstrap, gamma, lam, time_major)
    return GAE(adv.to(ro.dtype), ret.to(ro.dtype))


def lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    lam: float,
    *,
    dones: torch.Tensor | None = None,
    truncations: torch.Tensor | None = None,
    bootstrap: torch.Tensor | None = None,
    final_values: torch.Tensor | None = None,
    time_major: bool = False,
) -> torch.Tensor:
    """TD(lambda) returns G_t = r_t + gamma * (1 - end_t) * ((1 - lam) V_{t+1} + lam G_{t+1}).

    G_T = bootstrap (so G_{T-1} = r + gamma * bootstrap); at a truncated step
    G_t = r_t + gamma * final_values[:, t]. Equal to gae(...).returns.
    """
    ro = _prepare(rewards, values, dones, truncations, bootstrap, final_values, time_major)
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    lam = _validate.real("lam", lam, low=0.0, high=1.0)
    next_v = _next_values(ro.values, ro.bootstrap, time_major)
    x = ro.rewards + gamma * _add(_mul(ro.ep.cont, (1 - lam) * next_v), ro.ep.cut_value)
    y = linear_scan(x, _decay(gamma * lam, ro.ep), ro.bootstrap, reverse=True, time_major=time_major)
    return y.to(ro.dtype)


def vtrace(
    behaviour_log_probs: torch.Tensor,
    target_log_probs: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    *,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    pg_rho_bar: float | None = None,
    lam: float = 1.0,
    dones: torch.Tensor | None = None,
    truncations: torch.Tensor | None = None,
    bootstrap: torch.Tensor | None = None,
    final_values: torch.Tensor | None = None,
    time_major: bool = False,
) -> VTrace:
    """V-trace targets (Espeholt et al. 2018) from per-step log-probabilities.

    log rho_t = target - behaviour; rho_t = min(rho_bar, e^{log rho_t}) and
    c_t = lam * min(c_bar, e^{log rho_t}) are clipped in log space (exp of min(log rho, log bar)),
    so huge ratios never overflow. vs_t - V_t = rho_t delta_t + gamma (1 - end_t) c_t
    (vs_{t+1} - V_{t+1}), delta_t = r_t + gamma V_next_t - V_t. pg_advantages use
    ``pg_rho_bar`` (default ``rho_bar``). Outputs are differentiable; detach them for the usual
    IMPALA stop-gradient targets.
    """
    ro = _prepare(rewards, values, dones, truncations, bootstrap, final_values, time_major)
    shape, what = tuple(rewards.shape), f"{_layout(time_major)} of rewards"
    mu = _floating("behaviour_log_probs", behaviour_log_probs, rewards, shape, what)
    pi = _floating("target_log_probs", target_log_probs, rewards, shape, what)
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    lam = _validate.real("lam", lam, low=0.0, high=1.0)
    rho_bar = _validate.real("rho_bar", rho_bar, low=0.0)
    c_bar = _validate.real("c_bar", c_bar, low=0.0)
    pg_rho_bar = rho_bar if pg_rho_bar is None else _validate.real("pg_rho_bar", pg_rho_bar, low=0.0)
    log_rhos = _work(pi) - _work(mu)

    def clipped(bar: float) -> torch.Tensor:
        return torch.exp(torch.clamp(log_rhos, max=math.log(bar) if bar > 0 else -math.inf))

    rhos = clipped(rho_bar)
    cs = rhos if c_bar == rho_bar else clipped(c_bar)
    if lam != 1.0:
        cs = lam * cs
    r, v, ep = ro.rewards, ro.values, ro.ep
    next_v = _add(_mul(ep.cont, _next_values(v, ro.bootstrap, time_major)), ep.cut_value)
    delta = rhos * (r + gamma * next_v - v)
    vs = v + linear_scan(delta, _decay(gamma, ep) * cs, None, reverse=True, time_major=time_major)
    next_vs = _add(_mul(ep.cont, _next_values(vs, ro.bootstrap, time_major)), ep.cut_value)
    pg_rhos = rhos if pg_rho_bar == rho_bar else clipped(pg_rho_bar)
    pg_adv = pg_rhos * (r + gamma * next_vs - v)
    return VTrace(vs.to(ro.dtype), pg_adv.to(ro.dtype), rhos.to(ro.dtype))
