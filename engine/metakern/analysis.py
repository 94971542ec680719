"""Bias / variance study of meta-gradient estimators on random tabular MDPs (issue 3).

Reproduces, at small scale, the experiments of Liu et al. 2022 (tabular MAML: Hessian bias of the
LVC / MAML surrogates, compositional bias of estimated inner steps) and Tang et al. 2021 (Hessian
accuracy off-policy). The estimator ops of ``metakern.estimators`` (``OBJECTIVES``; the plain-torch
``metakern.estimators.reference`` gives the same numbers) are differentiated by autograd through
``logp = log_softmax(theta)[task, s, a]`` and compared with the exact oracle of
``metakern.oracle``. Everything is vectorised over tasks and repeats (theta is [R*B, S, A], one
sampled trajectory per row), float64, and reproducible from one seed.

Studies
-------
``hessian``
    The K = 1 building block at theta (theta = 0 on-policy; Tang's construction off-policy, below):
    the estimated policy gradient and Hessian-vector product H v, with v the exact outer gradient
    grad J(theta + alpha grad J(theta)) (alpha H v is the Hessian term of the exact one-step
    meta-gradient), on a grid of N (trajectories per estimate) x epsilon (off-policyness).
``compositional``
    The K-step meta-gradient with estimated inner steps theta_{k+1} = theta_k + alpha g_k (g_k from
    N fresh trajectories at the current theta_k, kept differentiable), then the outer estimate at
    theta_K differentiated back to theta_0, against ``oracle.maml_meta_gradient``; one-at-a-time
    sweeps of N, the inner learning rate alpha and K around a base point. Liu et al.'s slots name
    which parts are estimated ("l") or exact ("e"), in the order (inner value, Hessian, outer):
    ``lll`` is the full estimate; ``ell`` keeps the inner values exact (the derivative graph is the
    estimator's: theta' = stop(theta_exact) + theta_hat - stop(theta_hat)), so it has no
    compositional bias; ``lee`` estimates only the inner values (exact Hessians and outer gradient
    at the estimated parameters), so its bias is purely compositional.

What the estimators are unbiased for
------------------------------------
Trajectories have T steps. Every estimator bootstraps with a critic table V_b at s_T (the reward
at T - 1 becomes r_{T-1} + gamma V_b(s_T); the Monte-Carlo return is
G_t = sum_{t<=t'<T} gamma^(t'-t) r_t' + gamma^(T-t) V_b(s_T)), and V_b is also the baseline /
control variate at t < T. V_b = V^pi + value_noise * N(0, 1) * ||V^pi||_2 / S (Liu et al.'s critic;
value_noise = 0 gives the exact V^pi), held fixed (no gradient). So the sampled surrogates estimate
the derivatives of the *bootstrapped truncated objective*

    F(theta') = E_{pi_theta'}[ sum_{t<T} gamma^t r_t + gamma^T V_b(s_T) ],   V_b fixed,

not those of J = init . V^pi. Even with the exact critic, F(theta) = J(theta) in value only: grad F
misses gamma^T E[grad V^pi(s_T)] (the critic is a constant to the estimator), and critic noise at
s_T enters F through the distribution of s_T, which depends on every earlier action (it is not an
action-independent baseline). Both gaps are O(gamma^T) (gamma^T = 0.012 at the defaults) and do not
shrink with N, so the Hessian study measures bias against the exact derivatives of F
(``bootstrapped_target``: autograd through T steps of dynamic programming; column ``bias``) and
reports the bias against the infinite-horizon oracle too (``oracle.policy_gradient`` /
``oracle.hvp``; column ``bias_oracle``). The compositional study compares with
``oracle.maml_meta_gradient`` directly (there the O(gamma^T) gap is far below the effects studied).
``dice`` gets the bootstrapped rewards as well (GMRL's DiCE drops the bootstrap: it would then
estimate E[sum_{t<T} gamma^t r_t], a third target).

Off-policy (Tang et al.'s construction): the behaviour policy is uniform, mu = 1/A, the target is
pi_eps = (1 - eps) mu + eps pi_det with pi_det a random deterministic policy per task (theta =
log pi_eps; eps = 0 is the on-policy point theta = 0). The critic is that of pi_eps. Off-policy
estimators use the behaviour log-probabilities; ``maml``, ``dice_baseline`` and ``loaded_dice`` are
on-policy forms (Loaded DiCE with lambda = 1 off-policy is ``dr``, Tang's Table 1) and are skipped
at eps > 0.

Metrics (spec 2.1) per row, over R repeats of B tasks with D = S*A parameters: ``bias`` =
mean_{b,d} (mean_r est - truth)^2; ``variance`` = mean_{b,d} var_r(est); ``std_sum`` = mean_b sum_d
std_r(est) (GMRL's "variance"); ``corr`` = mean over (r, b) of the Pearson correlation of the
flattened estimate with the truth; ``rel_bias`` = bias / mean_{b,d} truth^2; ``sq_bias`` =
bias - variance / R, an unbiased estimate of the squared bias itself (``bias`` also contains the
Monte-Carlo error of the mean, variance / R, which falls like 1/N for every estimator), and
``share`` = sq_bias / bias, the systematic part of ``bias`` (about 0 for an unbiased estimator,
about 1 once the bias dominates).

Claims (``evaluate_claims``; each PASS / FAIL from the rows, or SKIP when the run lacks the rows):
P1 the autograd pipeline on the exact objective reproduces the oracle; H0 the bootstrapped target
is O(gamma^T) from the oracle; H1 every gradient is unbiased on-policy; H2 / H3 the Hessians of
DiCE, DiCE+baseline, Loaded DiCE, TayPO-2 and DR are unbiased on-policy, those of LVC and MAML
biased; H4 Loaded DiCE, TayPO-2 and DR coincide on-policy; H5 LVC's lower variance wins at small
N and its bias loses at large N; H6 TayPO-1/2 are biased off-policy, TayPO-2 less; H7 importance
weighting pays in variance off-policy; C1-C3 the compositional bias (lee) grows with K and alpha
and shrinks with N; C4 with exact inner values (ell) only the LVC / MAML Hessian bias remains; C5
the compositional bias grows with the inner gradient's variance (DiCE vs the baselined ones).

Entry points: ``AnalysisConfig`` (``AnalysisConfig.quick()``), ``run_analysis`` (rows + claims),
``hessian_study``, ``compositional_study``, ``evaluate_claims``, ``write_report`` (markdown, CSV,
JSON, PNG plots), ``format_claims`` / ``format_summary``, and the ``metakern analysis`` command.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from . import estimators, oracle

#: The estimator objectives the registry calls: the fused ops by default. Any module with the same
#: functions works; ``metakern.estimators.reference`` (plain torch + autograd) gives the same numbers.
OBJECTIVES = estimators

STUDIES = ("hessian", "compositional")
SLOT_NAMES = {"l": "estimated", "e": "exact"}
EXACT = "exact"  # the exact objective through the same autograd machinery (a pipeline check)
Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# Trajectory batches and the estimator registry
# ------------------------------------------------------------------------------------------------


class TrajectoryBatch(NamedTuple):
    """M sampled trajectories of T steps, one per row, with the signals every estimator needs.

    ``logp`` is differentiable (log softmax(theta)[task, s_t, a_t] of the policy being
    differentiated); ``behaviour_logp`` is the sampling policy's (detached; equal in value to
    ``logp`` on-policy). ``rewards`` are bootstrapped (the last step carries + gamma V_b(s_T)),
    ``values`` = V_b(s_t) and ``returns`` the bootstrapped Monte-Carlo returns G_t, all [M, T].
    """

    logp: torch.Tensor
    behaviour_logp: torch.Tensor
    rewards: torch.Tensor
    values: torch.Tensor
    returns: torch.Tensor
    on_policy: bool

    @property
    def advantages(self) -> torch.Tensor:
        return self.returns - self.values


@dataclass(frozen=True)
class Estimator:
    """One registry entry. ``surrogate(batch, gamma)`` returns the estimator's scalar objective (a
    batch mean, built from ``OBJECTIVES``, the fused estimator ops): its autograd derivatives are the
    estimated gradient and Hessian. ``off_policy``: whether it accepts batches sampled from another
    policy. ``hessian_unbiased``: what theory says about its on-policy Hessian (used by the claims)."""

    surrogate: Callable[[TrajectoryBatch, float], torch.Tensor]
    off_policy: bool
    hessian_unbiased: bool
    description: str


def _on_policy_only(name: str, batch: TrajectoryBatch) -> None:
    if not batch.on_policy:
        raise ValueError(f"estimator {name!r} is an on-policy form; it cannot use an off-policy batch")


def _maml(batch: TrajectoryBatch, gamma: float) -> torch.Tensor:
    _on_policy_only("maml", batch)
    return OBJECTIVES.maml_surrogate(batch.logp, batch.advantages, gamma)


def _dice(batch: TrajectoryBatch, gamma: float) -> torch.Tensor:
    if batch.on_policy:
        return OBJECTIVES.dice(batch.logp, batch.rewards, gamma)
    return OBJECTIVES.off_policy_dice(batch.logp, batch.behaviour_logp, batch.rewards, gamma)


def _dice_baseline(batch: TrajectoryBatch, gamma: float) -> torch.Tensor:
    _on_policy_only("dice_baseline", batch)
    return OBJECTIVES.dice_baseline(batch.logp, batch.rewards, batch.values, gamma)


def _loaded_dice(batch: TrajectoryBatch, gamma: float) -> torch.Tensor:
    _on_policy_only("loaded_dice", batch)
    return OBJECTIVES.loaded_dice(batch.logp, batch.advantages, gamma, 1.0)


def _lvc(batch: TrajectoryBatch, gamma: float) -> torch.Tensor:
    if batch.on_policy:
        return OBJECTIVES.lvc(batch.logp, batch.advantages, gamma)
    return OBJECTIVES.taypo(batch.logp, batch.behaviour_logp, batch.returns, batch.values, gamma, 1)


def _taypo2(batch: TrajectoryBatch, gamma: float) -> torch.Tensor:
    return OBJECTIVES.taypo(batch.logp, batch.behaviour_logp, batch.returns, batch.values, gamma, 2)


def _dr(batch: TrajectoryBatch, gamma: float) -> torch.Tensor:
    return OBJECTIVES.doubly_robust(batch.logp, batch.behaviour_logp, batch.rewards, batch.values, gamma)


#: name -> Estimator. Replace an entry's ``surrogate`` (``dataclasses.replace``) to run the study
#: on other ops with the same signatures (e.g. the fused ones).
ESTIMATORS: dict[str, Estimator] = {
    "maml": Estimator(_maml, False, False, "MAML-RL surrogate sum_t gamma^t stop(A_t) l_t (Hessian: H2 only)"),
    "dice": Estimator(_dice, True, True, "DiCE (off-policy: Liu et al.'s off-policy DiCE)"),
    "dice_baseline": Estimator(_dice_baseline, False, True, "DiCE + Mao et al.'s any-order baseline"),
    "loaded_dice": Estimator(_loaded_dice, False, True, "Loaded DiCE, lambda = 1 (off-policy: see dr)"),
    "lvc": Estimator(_lvc, True, False, "LVC = TayPO-1 (Hessian: H1 + H2, no H12)"),
    "taypo2": Estimator(_taypo2, True, True, "TayPO-2 (unbiased to 2nd order on-policy)"),
    "dr": Estimator(_dr, True, True, "doubly robust (Tang et al. Alg. 2, no truncation)"),
}


def check_estimators(names: Iterable[str]) -> tuple[str, ...]:
    """Validate estimator names (registry names or ``"exact"``); raises ValueError."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError("estimators: expected at least one estimator name")
    known = (*ESTIMATORS, EXACT)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown estimator {name!r}; expected one of: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"estimators: duplicate names in {names}")
    return names


def _returns(rewards: torch.Tensor, bootstrap: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{t<=t'<T} gamma^(t'-t) r_t' + gamma^(T-t) bootstrap, rows of [M, T]."""
    T = rewards.shape[1]
    idx = torch.arange(T, dtype=rewards.dtype, device=rewards.device)
    lag = idx[None, :] - idx[:, None]  # [t, t'] = t' - t
    weights = torch.where(lag >= 0, gamma ** lag.clamp_min(0), torch.zeros_like(lag))
    return rewards @ weights.T + bootstrap[:, None] * gamma ** (T - idx)


class Samples(NamedTuple):
    """Sampled trajectories of G groups (task x repeat) with N rows each, and their estimator
    signals; ``batch(theta)`` attaches differentiable log-probs of theta [G, S, A]."""

    group: torch.Tensor  # [M, 1] group index of each row
    states: torch.Tensor  # [M, T]
    actions: torch.Tensor  # [M, T]
    signals: TrajectoryBatch  # logp field = the behaviour log-probs (placeholder)

    def batch(self, theta: torch.Tensor) -> TrajectoryBatch:
        logp = torch.log_softmax(theta, dim=-1)[self.group, self.states, self.actions]
        return self.signals._replace(logp=logp)


def make_samples(
    traj: oracle.Trajectories, critic: torch.Tensor, gamma: float, horizon: int, *, on_policy: bool
) -> Samples:
    """The estimator signals of trajectories ``traj`` ([G, N, T + 1]; step T only supplies s_T for
    the bootstrap) with critic V_b [G, S]. ``traj.logp`` is the behaviour policy's."""
    G, N, T1 = traj.states.shape
    if T1 != horizon + 1:
        raise ValueError(f"trajectories: expected horizon + 1 = {horizon + 1} steps (s_T bootstraps), got {T1}")
    group = torch.arange(G, device=critic.device).repeat_interleave(N)[:, None]
    states = traj.states.reshape(G * N, T1)
    s, s_T = states[:, :horizon], states[:, horizon]
    actions = traj.actions.reshape(G * N, T1)[:, :horizon]
    behaviour = traj.logp.reshape(G * N, T1)[:, :horizon].detach()
    raw = traj.rewards.reshape(G * N, T1)[:, :horizon]
    values = critic[group, s]
    bootstrap = critic[group[:, 0], s_T]
    rewards = raw.clone()
    rewards[:, -1] += gamma * bootstrap
    returns = _returns(raw, bootstrap, gamma)
    signals = TrajectoryBatch(behaviour, behaviour, rewards, values, returns, on_policy)
    return Samples(group, s, actions, signals)


def estimated_gradient(
    name: str, theta: torch.Tensor, batch: TrajectoryBatch, gamma: float, *, create_graph: bool
) -> torch.Tensor:
    """The estimator's gradient [G, S, A] for each of the G groups of theta (a group's rows are its
    N trajectories): autograd of the surrogate, rescaled from the mean over all rows."""
    value = ESTIMATORS[name].surrogate(batch, gamma) * theta.shape[0]
    (grad,) = torch.autograd.grad(value, theta, create_graph=create_graph)
    return grad


# ------------------------------------------------------------------------------------------------
# Exact quantities
# ------------------------------------------------------------------------------------------------


def exact_objective(mdp: oracle.TabularMDP, theta: torch.Tensor) -> torch.Tensor:
    """J(theta) = init . (I - gamma P_pi)^-1 r_pi per task [B], differentiable (torch.linalg.solve)."""
    pi = torch.softmax(theta, dim=-1)
    P_pi = torch.einsum("bsa,bsat->bst", pi, mdp.P)
    r_pi = (pi * mdp.R).sum(-1)
    eye = torch.eye(mdp.num_states, dtype=theta.dtype, device=theta.device)
    V = torch.linalg.solve(eye - mdp.gamma * P_pi, r_pi.unsqueeze(-1)).squeeze(-1)
    return (mdp.init * V).sum(-1)


def bootstrapped_objective(
    mdp: oracle.TabularMDP, theta: torch.Tensor, critic: torch.Tensor, horizon: int
) -> torch.Tensor:
    """F(theta) = E[sum_{t<T} gamma^t r_t + gamma^T V_b(s_T)] per task [B] with the critic V_b [B, S]
    held fixed: T steps of dynamic programming, differentiable in theta."""
    pi = torch.softmax(theta, dim=-1)
    P_pi = torch.einsum("bsa,bsat->bst", pi, mdp.P)
    r_pi = (pi * mdp.R).sum(-1)
    W = critic.detach()
    for _ in range(horizon):
        W = r_pi + mdp.gamma * torch.einsum("bst,bt->bs", P_pi, W)
    return (mdp.init * W).sum(-1)


def _grad_and_hvp(objective: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, v: torch.Tensor):
    theta = theta.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(theta).sum(), theta, create_graph=True)
    (hv,) = torch.autograd.grad((grad * v).sum(), theta)
    return grad.detach(), hv


def bootstrapped_target(
    mdp: oracle.TabularMDP, theta: torch.Tensor, critic: torch.Tensor, horizon: int, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (grad F, H_F v), each [B, S, A], of the bootstrapped truncated objective: what the
    sampled estimators are unbiased for (see the module docstring)."""
    return _grad_and_hvp(lambda th: bootstrapped_objective(mdp, th, critic, horizon), theta, v)


def critic_table(
    mdp: oracle.TabularMDP, theta: torch.Tensor, noise_scale: float, generator: torch.Generator
) -> torch.Tensor:
    """V_b = V^pi + noise_scale * N(0, 1) * ||V^pi||_2 / S per task, [B, S] (Liu et al.'s critic)."""
    V = oracle.evaluate(mdp, theta.detach()).V
    if noise_scale == 0:
        return V
    noise = torch.randn(V.shape, generator=generator, dtype=V.dtype).to(V.device)
    return V + noise_scale * noise * V.norm(dim=-1, keepdim=True) / V.shape[-1]


def tang_policy(num_tasks: int, num_states: int, num_actions: int, eps: float, seed: int) -> torch.Tensor:
    """theta = log pi_eps, pi_eps = (1 - eps) uniform + eps pi_det (pi_det: a random deterministic
    policy per task, seeded), [B, S, A] float64; eps = 0 gives theta = 0."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"epsilon: expected a value in [0, 1), got {eps}")
    if eps == 0:
        return torch.zeros(num_tasks, num_states, num_actions, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    best = torch.randint(num_actions, (num_tasks, num_states), generator=g)
    det = torch.nn.functional.one_hot(best, num_actions).to(torch.float64)
    return torch.log((1 - eps) / num_actions + eps * det)


def repeat_mdp(mdp: oracle.TabularMDP, repeats: int) -> oracle.TabularMDP:
    """The B tasks repeated R times (group index r * B + b)."""
    return oracle.TabularMDP(
        mdp.P.repeat(repeats, 1, 1, 1), mdp.R.repeat(repeats, 1, 1), mdp.init.repeat(repeats, 1), mdp.gamma
    )


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


def metrics(estimates: torch.Tensor, truth: torch.Tensor, *, deterministic: bool = False) -> dict[str, float]:
    """Bias / variance / correlation of estimates [R, B, D] against truth [B, D] (module docstring).
    ``deterministic``: the estimate has no randomness (variance 0 by construction; R may be 1)."""
    if estimates.dim() != 3 or truth.dim() != 2 or tuple(estimates.shape[1:]) != tuple(truth.shape):
        raise ValueError(
            f"metrics: expected estimates [R, B, D] and truth [B, D], got {tuple(estimates.shape)}, "
            f"{tuple(truth.shape)}"
        )
    R = estimates.shape[0]
    if R < 2 and not deterministic:
        raise ValueError(f"metrics: need at least 2 repeats to estimate a variance, got {R}")
    est = estimates.detach().to(torch.float64)
    truth = truth.detach().to(torch.float64)
    bias = ((est.mean(0) - truth) ** 2).mean().item()
    if deterministic:
        variance = std_sum = 0.0
    else:
        variance = est.var(0).mean().item()
        std_sum = est.std(0).sum(-1).mean().item()
    x = est - est.mean(-1, keepdim=True)
    y = (truth - truth.mean(-1, keepdim=True)).expand_as(x)
    denom = ((x * x).sum(-1) * (y * y).sum(-1)).sqrt()
    corr = ((x * y).sum(-1) / denom.clamp_min(1e-300)).masked_fill(denom == 0, 0.0).mean().item()
    scale = (truth**2).mean().item()
    sq_bias = bias - variance / R
    return {
        "bias": bias,
        "sq_bias": sq_bias,
        "share": sq_bias / bias if bias > 0 else 0.0,
        "rel_bias": bias / scale if scale > 0 else math.nan,
        "variance": variance,
        "std_sum": std_sum,
        "corr": corr,
        "truth_sq": scale,
    }


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def _positive_int(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


def _int_list(name: str, values: Any, low: int = 1) -> tuple[int, ...]:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name}: expected at least one value")
    return tuple(_positive_int(f"{name}[{i}]", v, low) for i, v in enumerate(values))


def _float(name: str, value: Any, low: float | None = None, high: float | None = None, *, open_high=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    value = float(value)
    if (low is not None and value < low) or (high is not None and (value >= high if open_high else value > high)):
        bounds = f"[{low}, {high})" if open_high else f"[{low}, {high}]"
        raise ValueError(f"{name}: expected a value in {bounds}, got {value}")
    return value


def _float_list(name: str, values: Any, low=None, high=None, *, open_high=False) -> tuple[float, ...]:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name}: expected at least one value")
    return tuple(_float(f"{name}[{i}]", v, low, high, open_high=open_high) for i, v in enumerate(values))


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of both studies; the defaults follow Liu et al. 2022's tabular setting (spec 2.3).

    MDPs: ``num_tasks`` random MDPs (``oracle.random_mdps``: S = ``num_states`` = 20, A =
    ``num_actions`` = 5, Dirichlet(``concentration`` = 0.001) transitions, U(0, 1) rewards, start
    state 0), discount ``gamma`` = 0.8, trajectories of ``horizon`` T = 20 steps, theta_0 = 0
    (uniform policy), critic noise ``value_noise`` = 1 (x ||V||_2 / S; 0 = exact critic), inner
    learning rate ``alpha`` = 10. ``estimators``: registry names, plus ``"exact"`` for the exact
    objective through the same autograd pipeline (a check: its bias against the oracle is ~0).

    Hessian study: ``hessian_repeats`` R = 20 estimates per task at every N in ``hessian_n`` and
    off-policyness eps in ``epsilons`` (Tang's construction; 0 = on-policy).

    Compositional study: ``comp_repeats`` R = 20; sweeps of N over ``comp_n``, alpha over
    ``comp_lrs`` and K over ``comp_ks``, each with the other two at the base point (``comp_base_n``
    = 32 trajectories as in Liu et al.'s ablations, ``alpha``, ``comp_base_k`` = 2); ``slots``:
    which of Liu et al.'s estimated / exact decompositions to run (module docstring).

    ``seed`` fixes everything (MDPs, policies, critics and every trajectory).
    """

    seed: int = 0
    num_tasks: int = 10
    num_states: int = 20
    num_actions: int = 5
    gamma: float = 0.8
    horizon: int = 20
    concentration: float = 0.001
    value_noise: float = 1.0
    alpha: float = 10.0
    estimators: tuple[str, ...] = ("maml", "dice", "dice_baseline", "loaded_dice", "lvc", "taypo2", "dr", EXACT)
    hessian_repeats: int = 20
    hessian_n: tuple[int, ...] = (4, 16, 64, 256, 1024)
    epsilons: tuple[float, ...] = (0.0, 0.2, 0.5, 0.8)
    comp_repeats: int = 20
    comp_n: tuple[int, ...] = (8, 32, 128, 512)
    comp_lrs: tuple[float, ...] = (1.0, 4.0, 7.0, 10.0, 13.0)
    comp_ks: tuple[int, ...] = (1, 2, 3, 4, 5)
    comp_base_n: int = 32
    comp_base_k: int = 2
    slots: tuple[str, ...] = ("lll", "ell", "lee")

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {self.seed!r}")
        for name in ("num_tasks", "num_states", "num_actions", "horizon", "comp_base_n", "comp_base_k"):
            _positive_int(name, getattr(self, name))
        _positive_int("num_actions", self.num_actions, 2)
        for name in ("hessian_repeats", "comp_repeats"):
            _positive_int(name, getattr(self, name), 2)
        sets = object.__setattr__
        sets(self, "gamma", _float("gamma", self.gamma, 0.0, 1.0, open_high=True))
        sets(self, "concentration", _float("concentration", self.concentration, 0.0))
        if self.concentration <= 0:
            raise ValueError(f"concentration: expected a positive number, got {self.concentration}")
        sets(self, "value_noise", _float("value_noise", self.value_noise, 0.0))
        sets(self, "alpha", _float("alpha", self.alpha, 0.0))
        sets(self, "estimators", check_estimators(self.estimators))
        sets(self, "hessian_n", _int_list("hessian_n (N)", self.hessian_n))
        sets(self, "comp_n", _int_list("comp_n (N)", self.comp_n))
        sets(self, "comp_ks", _int_list("comp_ks (K)", self.comp_ks))
        sets(self, "epsilons", _float_list("epsilons", self.epsilons, 0.0, 1.0, open_high=True))
        sets(self, "comp_lrs", _float_list("comp_lrs (inner learning rates)", self.comp_lrs, 0.0))
        slots = tuple(self.slots)
        for s in slots:
            if len(s) != 3 or set(s) - set(SLOT_NAMES) or s == "eee":
                raise ValueError(
                    f"slots: expected 3 letters from 'l'/'e' (inner, hessian, outer), not 'eee'; got {s!r}"
                )
        sets(self, "slots", slots)

    @classmethod
    def quick(cls, **overrides: Any) -> AnalysisConfig:
        """A small configuration (about 20 s on 2 idle CPU cores) on which the claims still hold."""
        settings: dict[str, Any] = {
            "num_tasks": 5,
            "hessian_repeats": 10,
            "hessian_n": (8, 64, 1024),
            "epsilons": (0.0, 0.5),
            "comp_repeats": 10,
            "comp_n": (8, 64, 512),
            "comp_lrs": (1.0, 10.0),
            "comp_ks": (1, 3),
        }
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _seed(*parts: Any) -> int:
    """A deterministic 31-bit seed from the parts (stable across runs and platforms)."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def _generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


def _mdps(config: AnalysisConfig) -> oracle.TabularMDP:
    return oracle.random_mdps(
        config.num_tasks,
        config.num_states,
        config.num_actions,
        gamma=config.gamma,
        concentration=config.concentration,
        seed=_seed(config.seed, "mdps"),
    )


def _report(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _flat(t: torch.Tensor, repeats: int, tasks: int) -> torch.Tensor:
    return t.detach().reshape(repeats, tasks, -1)


# ------------------------------------------------------------------------------------------------
# Study 1: the Hessian (K = 1 building block)
# ------------------------------------------------------------------------------------------------


def _record(**fields: Any) -> dict[str, Any]:
    row = dict.fromkeys(RECORD_FIELDS)
    row.update(fields)
    return row


RECORD_FIELDS = (
    "study",
    "estimator",
    "slots",
    "quantity",
    "N",
    "epsilon",
    "alpha",
    "K",
    "repeats",
    "bias",
    "sq_bias",
    "share",
    "rel_bias",
    "variance",
    "std_sum",
    "corr",
    "truth_sq",
    "bias_oracle",
    "seconds",
)


def hessian_study(config: AnalysisConfig, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Rows (plain dicts, fields ``RECORD_FIELDS``) of the Hessian study: for every epsilon and N,
    every estimator's gradient (``quantity="grad"``) and Hessian-vector product (``"hvp"``) at theta_eps
    against the exact derivatives of the bootstrapped objective (``bias``) and of J (``bias_oracle``)."""
    B, S, A, T, R = config.num_tasks, config.num_states, config.num_actions, config.horizon, config.hessian_repeats
    gamma, alpha = config.gamma, config.alpha
    mdp = _mdps(config)
    mdp_rep = repeat_mdp(mdp, R)
    rows: list[dict[str, Any]] = []
    sampled = [e for e in config.estimators if e != EXACT]
    total, done = len(config.epsilons) * len(config.hessian_n), 0
    for eps in config.epsilons:
        theta = tang_policy(B, S, A, eps, _seed(config.seed, "pi_det"))
        ev = oracle.evaluate(mdp, theta)
        theta1 = theta + alpha * oracle.policy_gradient(mdp, theta, ev)
        v = oracle.policy_gradient(mdp, theta1)
        critic = critic_table(mdp, theta, config.value_noise, _generator(config.seed, "hessian-critic", eps))
        target = dict(zip(("grad", "hvp"), bootstrapped_target(mdp, theta, critic, T, v), strict=True))
        exact = {"grad": oracle.policy_gradient(mdp, theta, ev), "hvp": oracle.hvp(mdp, theta, v, ev)}
        truth = {q: t.reshape(B, -1) for q, t in target.items()}
        truth_oracle = {q: t.reshape(B, -1) for q, t in exact.items()}
        common = {"study": "hessian", "slots": "", "epsilon": eps, "alpha": alpha, "K": 1}
        if EXACT in config.estimators:
            start = time.perf_counter()
            derivs = dict(
                zip(("grad", "hvp"), _grad_and_hvp(lambda th: exact_objective(mdp, th), theta, v), strict=True)
            )
            for q, d in derivs.items():
                m = metrics(d.reshape(1, B, -1), truth[q], deterministic=True)
                m_or = metrics(d.reshape(1, B, -1), truth_oracle[q], deterministic=True)
                rows.append(
                    _record(
                        **common,
                        estimator=EXACT,
                        quantity=q,
                        N=None,
                        repeats=1,
                        **m,
                        bias_oracle=m_or["bias"],
                        seconds=time.perf_counter() - start,
                    )
                )
        theta_rep, v_rep = theta.repeat(R, 1, 1), v.repeat(R, 1, 1)
        behaviour = theta_rep if eps == 0 else torch.zeros_like(theta_rep)  # mu: uniform
        for N in config.hessian_n:
            start = time.perf_counter()
            traj = oracle.sample_trajectories(mdp_rep, behaviour, N, T + 1, seed=_seed(config.seed, "hessian", eps, N))
            samples = make_samples(traj, critic.repeat(R, 1), gamma, T, on_policy=eps == 0)
            for name in sampled:
                if eps > 0 and not ESTIMATORS[name].off_policy:
                    continue
                t0 = time.perf_counter()
                th = theta_rep.clone().requires_grad_(True)
                grad = estimated_gradient(name, th, samples.batch(th), gamma, create_graph=True)
                (hv,) = torch.autograd.grad((grad * v_rep).sum(), th)
                seconds = time.perf_counter() - t0
                for q, est in (("grad", grad), ("hvp", hv)):
                    est = _flat(est, R, B)
                    m = metrics(est, truth[q])
                    b_or = ((est.mean(0) - truth_oracle[q]) ** 2).mean().item()
                    rows.append(
                        _record(
                            **common, estimator=name, quantity=q, N=N, repeats=R, **m, bias_oracle=b_or, seconds=seconds
                        )
                    )
            done += 1
            _report(progress, f"[hessian] eps={eps:g} N={N}: {done}/{total} ({time.perf_counter() - start:.1f}s)")
    return rows


# ------------------------------------------------------------------------------------------------
# Study 2: compositional bias of the K-step meta-gradient
# ------------------------------------------------------------------------------------------------


class SampleCache:
    """Samples by (key, exact theta value): runs that reach the same parameters with the same seed
    (every estimator at theta_0; ``lee`` along the inner path of ``lll``; ``ell`` along the exact
    path) draw identical trajectories, so they are sampled once. Holds one configuration's samples;
    make a new one per configuration."""

    def __init__(self) -> None:
        self._entries: dict[tuple, list[tuple[torch.Tensor, Samples]]] = {}

    def get(self, key: tuple, theta: torch.Tensor) -> Samples | None:
        for value, samples in self._entries.get(key, ()):
            if value.shape == theta.shape and torch.equal(value, theta):
                return samples
        return None

    def put(self, key: tuple, theta: torch.Tensor, samples: Samples) -> None:
        self._entries.setdefault(key, []).append((theta.detach().clone(), samples))


def meta_gradient_estimate(
    estimator: str,
    slots: str,
    mdp: oracle.TabularMDP,
    theta0: torch.Tensor,
    alpha: float,
    steps: int,
    num_trajectories: int,
    horizon: int,
    *,
    value_noise: float = 1.0,
    exact_thetas: Sequence[torch.Tensor] | None = None,
    seed: int = 0,
    cache: SampleCache | None = None,
) -> torch.Tensor:
    """One K-step MAML meta-gradient estimate per task of ``mdp`` (theta0 [G, S, A]; G groups, e.g.
    tasks x repeats), returned detached [G, S, A].

    ``slots`` (inner value, Hessian, outer), each "l" (estimator) or "e" (exact): the inner update
    theta_{k+1} = theta_k + alpha g takes its value from the estimated or exact gradient and its
    derivative graph from the estimator (create_graph) or the exact objective; the outer gradient at
    theta_K is the estimator's or exact. "lll" is the usual sampled estimate; "eee" with
    estimator ``"exact"`` reproduces ``oracle.maml_meta_gradient``. Exact inner values need
    ``exact_thetas`` (``oracle.maml_meta_gradient(...).thetas``). Trajectories (N per group per
    step, sampled at the current value of theta_k) and critic noise are seeded by ``seed``, so
    estimators and slots compared with the same seed share their random numbers where possible;
    ``cache`` (a ``SampleCache``) reuses the samples of an identical (seed, step, theta value)."""
    if estimator != EXACT:
        check_estimators((estimator,))
    if len(slots) != 3 or set(slots) - set(SLOT_NAMES):
        raise ValueError(f"slots: expected 3 letters from 'l'/'e' (inner, hessian, outer), got {slots!r}")
    if estimator == EXACT and slots != "eee":
        raise ValueError(f"the exact estimator has only exact slots ('eee'), got {slots!r}")
    inner_exact, hess_exact, outer_exact = (c == "e" for c in slots)
    if inner_exact and not hess_exact and (exact_thetas is None or len(exact_thetas) != steps + 1):
        raise ValueError("exact inner values need exact_thetas: the K + 1 exact parameters theta_0 .. theta_K")
    gamma = mdp.gamma

    def sampled(theta_value: torch.Tensor, k: int) -> Samples:
        key = (seed, k, num_trajectories, horizon, value_noise)
        hit = None if cache is None else cache.get(key, theta_value)
        if hit is not None:
            return hit
        traj = oracle.sample_trajectories(mdp, theta_value, num_trajectories, horizon + 1, seed=_seed(seed, "traj", k))
        critic = critic_table(mdp, theta_value, value_noise, _generator(seed, "critic", k))
        out = make_samples(traj, critic, gamma, horizon, on_policy=True)
        if cache is not None:
            cache.put(key, theta_value, out)
        return out

    def exact_grad(theta: torch.Tensor, create_graph: bool) -> torch.Tensor:
        (g,) = torch.autograd.grad(exact_objective(mdp, theta).sum(), theta, create_graph=create_graph)
        return g

    theta0 = theta0.detach().clone().requires_grad_(True)
    theta = theta0
    for k in range(steps):
        value = theta.detach()
        samples = None if (inner_exact and hess_exact) else sampled(value, k)
        if hess_exact:
            graph = theta + alpha * exact_grad(theta, True)
        else:
            graph = theta + alpha * estimated_gradient(estimator, theta, samples.batch(theta), gamma, create_graph=True)
        if inner_exact and hess_exact:
            next_value = graph.detach()  # the exact step itself
        elif inner_exact:
            next_value = exact_thetas[k + 1].to(value)
        elif hess_exact:
            leaf = value.clone().requires_grad_(True)
            next_value = value + alpha * estimated_gradient(
                estimator, leaf, samples.batch(leaf), gamma, create_graph=False
            )
        else:
            next_value = graph.detach()
        theta = graph - graph.detach() + next_value
    if outer_exact:
        (meta,) = torch.autograd.grad(exact_objective(mdp, theta).sum(), theta0)
    else:
        samples = sampled(theta.detach(), steps)
        surrogate = ESTIMATORS[estimator].surrogate(samples.batch(theta), gamma) * theta.shape[0]
        (meta,) = torch.autograd.grad(surrogate, theta0)
    return meta.detach()


def _comp_configs(config: AnalysisConfig) -> list[tuple[int, float, int]]:
    base_n, base_a, base_k = config.comp_base_n, config.alpha, config.comp_base_k
    points = [(n, base_a, base_k) for n in config.comp_n]
    points += [(base_n, a, base_k) for a in config.comp_lrs]
    points += [(base_n, base_a, k) for k in config.comp_ks]
    return list(dict.fromkeys(points))


def compositional_study(config: AnalysisConfig, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Rows (plain dicts, fields ``RECORD_FIELDS``, ``quantity="meta_grad"``) of the compositional
    study: every estimator and slot assignment at every (N, alpha, K) of the one-at-a-time sweeps,
    against ``oracle.maml_meta_gradient``."""
    B, S, A, T, R = config.num_tasks, config.num_states, config.num_actions, config.horizon, config.comp_repeats
    mdp = _mdps(config)
    mdp_rep = repeat_mdp(mdp, R)
    theta0 = torch.zeros(B, S, A, dtype=torch.float64)
    rows: list[dict[str, Any]] = []
    points = _comp_configs(config)
    for i, (N, alpha, K) in enumerate(points):
        start = time.perf_counter()
        exact = oracle.maml_meta_gradient(mdp, theta0, alpha, K)
        truth = exact.meta_gradient.reshape(B, -1)
        exact_thetas = [t.repeat(R, 1, 1) for t in exact.thetas]
        seed = _seed(config.seed, "compositional", N, alpha, K)
        common = {"study": "compositional", "quantity": "meta_grad", "N": N, "epsilon": 0.0, "alpha": alpha, "K": K}
        runs = [(EXACT, "eee")] if EXACT in config.estimators else []
        runs += [(e, s) for e in config.estimators if e != EXACT for s in config.slots]
        cache = SampleCache()
        for name, slots in runs:
            t0 = time.perf_counter()
            if name == EXACT:
                est = meta_gradient_estimate(EXACT, "eee", mdp, theta0, alpha, K, 1, T)
                m = metrics(est.reshape(1, B, -1), truth, deterministic=True)
                repeats = 1
            else:
                est = meta_gradient_estimate(
                    name,
                    slots,
                    mdp_rep,
                    exact_thetas[0],
                    alpha,
                    K,
                    N,
                    T,
                    value_noise=config.value_noise,
                    exact_thetas=exact_thetas,
                    seed=seed,
                    cache=cache,
                )
                m = metrics(_flat(est, R, B), truth)
                repeats = R
            rows.append(
                _record(
                    **common,
                    estimator=name,
                    slots=slots,
                    repeats=repeats,
                    **m,
                    bias_oracle=m["bias"],
                    seconds=time.perf_counter() - t0,
                )
            )
        _report(
            progress,
            f"[compositional] N={N} alpha={alpha:g} K={K}: {i + 1}/{len(points)} ({time.perf_counter() - start:.1f}s)",
        )
    return rows


# ------------------------------------------------------------------------------------------------
# Claims: the qualitative statements, checked on the rows
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A qualitative statement checked on the study's own rows. ``status``: PASS, FAIL, or SKIP (the
    run lacks the rows needed, e.g. a single N)."""

    key: str
    statement: str
    status: str
    evidence: str

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def _select(rows: Sequence[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if all(
            (math.isclose(r[k], v) if isinstance(v, float) and r[k] is not None else r[k] == v)
            for k, v in where.items()
        ):
            out.append(r)
    return out


def _series(rows, x: str, y: str, **where: Any) -> list[tuple[float, float]]:
    pts = sorted((r[x], r[y]) for r in _select(rows, **where) if r[x] is not None)
    return pts


def _loglog_slope(points: Sequence[tuple[float, float]]) -> float:
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(pts) < 2:
        return math.nan
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else math.nan


def _spearman(points: Sequence[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return math.nan

    def ranks(vals):
        order = sorted(range(n), key=lambda i: vals[i])
        r = [0.0] * n
        for pos, i in enumerate(order):
            r[i] = float(pos)
        return r

    rx, ry = ranks([p[0] for p in points]), ranks([p[1] for p in points])
    mx = my = (n - 1) / 2
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den > 0 else math.nan


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def _claim(key: str, statement: str, checks: list[tuple[bool, str]], min_checks: int = 1) -> Claim:
    if len(checks) < min_checks:
        return Claim(key, statement, "SKIP", "not enough rows in this run (needs a wider sweep)")
    ok = all(c for c, _ in checks)
    return Claim(key, statement, "PASS" if ok else "FAIL", "; ".join(("" if c else "[x] ") + e for c, e in checks))


SATURATED = 0.25  # rel_bias at which an estimate has lost most of its correlation with the truth


def _trend_checks(rows, xkey: str, estimators: Sequence[str], slots: str, direction: int, base: dict[str, Any]):
    """rel_bias (bias / mean truth^2: the truth's scale changes with K and alpha) along one
    compositional sweep: rising (direction +1) or falling (-1) end to end by a factor >= 2, with a
    Spearman rank correlation of the same sign >= 0.8 when the sweep has >= 3 points. A rising sweep
    that starts saturated (rel_bias >= SATURATED: the bias of the mean is of the order of the truth
    itself and cannot grow much) passes if it stays at least there."""
    checks = []
    for name in estimators:
        pts = _series(rows, xkey, "rel_bias", study="compositional", estimator=name, slots=slots, **base)
        if len(pts) < 2:
            continue
        (x0, y0), (x1, y1) = pts[0], pts[-1]
        ratio = y1 / y0 if y0 > 0 else math.inf
        rho = _spearman(pts)
        ok = (ratio >= 2 if direction > 0 else ratio <= 0.5) and (len(pts) < 3 or direction * rho >= 0.8)
        text = f"{name}: rel_bias {_fmt(y0)} ({xkey}={_fmt(x0)}) -> {_fmt(y1)} ({xkey}={_fmt(x1)}), x{_fmt(ratio)}"
        text += f", spearman {rho:+.2f}" if len(pts) >= 3 else ""
        if not ok and direction > 0 and y0 >= SATURATED and min(y for _, y in pts) >= SATURATED:
            ok, text = True, text + f" (saturated: rel_bias >= {SATURATED} throughout)"
        checks.append((ok, text))
    return checks


def evaluate_claims(rows: Sequence[dict[str, Any]], config: AnalysisConfig) -> list[Claim]:
    """Check the qualitative claims of the spec (sections 1.4-1.9) on the rows. Thresholds: an
    estimator is "unbiased" when its bias falls with N with a log-log slope <= -0.7 (1/N is -1) and
    the systematic share sq_bias / bias at the largest N is < 0.5; "biased" when the share is >= 0.5
    and the bias's slope over the last two N is > -0.5."""
    claims: list[Claim] = []
    sampled = [e for e in config.estimators if e != EXACT]
    hess = _select(rows, study="hessian")
    comp = _select(rows, study="compositional")

    # P: the pipeline (autograd through the exact objective) against the closed-form oracle.
    errors = []
    for r in _select(rows, estimator=EXACT):
        rel = math.sqrt(r["bias_oracle"] / r["truth_sq"]) if r["truth_sq"] > 0 else math.sqrt(r["bias_oracle"])
        where = f"{r['study']} {r['quantity']} eps={_fmt(r['epsilon'])} alpha={_fmt(r['alpha'])} K={r['K']}"
        errors.append((rel, where))
    checks = []
    if errors:
        rel, where = max(errors)
        checks.append((rel < 1e-8, f"{len(errors)} rows, worst {where}: rel err {rel:.1e}"))
    claims.append(
        _claim(
            "P1",
            "Pipeline: autograd through the exact objective reproduces oracle.policy_gradient / "
            "oracle.hvp / oracle.maml_meta_gradient (relative error < 1e-8)",
            checks,
        )
    )

    if hess:
        on = _select(hess, epsilon=0.0)
        n_max = max(config.hessian_n)
        # Truncation gap (information: the bootstrapped target vs the infinite-horizon oracle).
        checks = []
        for r in _select(on, estimator=EXACT):
            gap = math.sqrt(r["bias"] / r["truth_sq"])
            checks.append((gap <= 3 * config.gamma**config.horizon, f"{r['quantity']}: rel gap {gap:.2e}"))
        claims.append(
            _claim(
                "H0",
                f"The bootstrapped truncated target differs from the infinite-horizon oracle by "
                f"O(gamma^T) only (relative gap <= 3 gamma^T = {3 * config.gamma**config.horizon:.2e})",
                checks,
            )
        )

        def slope_checks(quantity: str, names: Sequence[str], unbiased: bool, eps: float = 0.0):
            out = []
            for name in names:
                pts = _series(hess, "N", "bias", estimator=name, quantity=quantity, epsilon=eps)
                top = _select(hess, estimator=name, quantity=quantity, epsilon=eps, N=n_max)
                if len(pts) < 2 or not top:
                    continue
                share = top[0]["share"]
                if unbiased:
                    slope = _loglog_slope(pts)
                    ok = slope <= -0.7 and share < 0.5
                    out.append(
                        (
                            ok,
                            f"{name}: slope {slope:+.2f}, bias {_fmt(pts[0][1])} -> {_fmt(pts[-1][1])}, "
                            f"share@N={n_max} {share:+.2f}",
                        )
                    )
                else:
                    slope = _loglog_slope(pts[-2:])
                    ok = slope > -0.5 and share >= 0.5
                    out.append(
                        (
                            ok,
                            f"{name}: last slope {slope:+.2f}, bias {_fmt(pts[-2][1])} -> {_fmt(pts[-1][1])}, "
                            f"share@N={n_max} {share:+.2f}, sq_bias {_fmt(top[0]['sq_bias'])}",
                        )
                    )
            return out

        claims.append(
            _claim(
                "H1",
                "On-policy, every estimator's policy gradient is unbiased: its bias falls ~1/N",
                slope_checks("grad", sampled, True),
            )
        )
        unbiased = [e for e in sampled if ESTIMATORS[e].hessian_unbiased]
        biased = [e for e in sampled if not ESTIMATORS[e].hessian_unbiased]
        claims.append(
            _claim(
                "H2",
                f"On-policy, the Hessians (HVPs) of {', '.join(unbiased)} are unbiased: bias falls ~1/N toward 0",
                slope_checks("hvp", unbiased, True),
            )
        )
        claims.append(
            _claim(
                "H3",
                f"On-policy, the Hessians (HVPs) of {', '.join(biased)} are biased: the bias stops "
                "shrinking with N and is systematic at the largest N",
                slope_checks("hvp", biased, False),
            )
        )

        # H4: Loaded DiCE (lambda = 1), TayPO-2 and DR coincide on-policy.
        same = [e for e in ("loaded_dice", "taypo2", "dr") if e in sampled]
        checks = []
        if len(same) >= 2:
            worst = 0.0
            for q in ("grad", "hvp"):
                for N in config.hessian_n:
                    vals = [_select(on, estimator=e, quantity=q, N=N)[0] for e in same]
                    for key in ("bias", "variance", "corr"):
                        ref = vals[0][key]
                        for r in vals[1:]:
                            worst = max(worst, abs(r[key] - ref) / max(abs(ref), 1e-300))
            checks.append(
                (worst < 1e-6, f"{', '.join(same)}: max relative difference of bias/variance/corr {worst:.1e}")
            )
        claims.append(
            _claim(
                "H4",
                "On-policy, Loaded DiCE (lambda = 1), TayPO-2 and DR give the same gradient and Hessian "
                "estimates (same samples, same metrics)",
                checks,
            )
        )

        # H5: variance / bias trade-off of LVC vs DR on-policy (Tang Fig. 1; ProMP 7.2).
        checks = []
        if "lvc" in sampled and "dr" in sampled and len(config.hessian_n) >= 2:
            lvc = {r["N"]: r for r in _select(on, estimator="lvc", quantity="hvp")}
            dr = {r["N"]: r for r in _select(on, estimator="dr", quantity="hvp")}
            ns = sorted(lvc)
            lower = all(lvc[n]["variance"] < dr[n]["variance"] for n in ns)
            checks.append(
                (
                    lower,
                    "variance lvc < dr at every N: "
                    + ", ".join(f"N={n} {_fmt(lvc[n]['variance'])} vs {_fmt(dr[n]['variance'])}" for n in ns),
                )
            )
            checks.append(
                (
                    lvc[ns[0]]["corr"] > dr[ns[0]]["corr"],
                    f"corr at N={ns[0]}: lvc {lvc[ns[0]]['corr']:.3f} > dr {dr[ns[0]]['corr']:.3f}",
                )
            )
            checks.append(
                (
                    lvc[ns[-1]]["corr"] < dr[ns[-1]]["corr"],
                    f"corr at N={ns[-1]}: lvc {lvc[ns[-1]]['corr']:.3f} < dr {dr[ns[-1]]['corr']:.3f}",
                )
            )
        claims.append(
            _claim(
                "H5",
                "On-policy, LVC's Hessian has lower variance than DR's, so it is more accurate (corr) at "
                "the smallest N, but its bias makes it plateau below DR at the largest N",
                checks,
            )
        )

        # Off-policy claims.
        eps_pos = [e for e in config.epsilons if e > 0]
        checks = []
        if "lvc" in sampled and "taypo2" in sampled:
            for eps in eps_pos:
                r1 = _select(hess, estimator="lvc", quantity="hvp", epsilon=eps, N=n_max)
                r2 = _select(hess, estimator="taypo2", quantity="hvp", epsilon=eps, N=n_max)
                if r1 and r2:
                    r1, r2 = r1[0], r2[0]
                    ok = r1["share"] >= 0.5 and r2["share"] >= 0.5 and r2["sq_bias"] < r1["sq_bias"]
                    checks.append(
                        (
                            ok,
                            f"eps={_fmt(eps)}, N={n_max}: share lvc {r1['share']:+.2f}, taypo2 "
                            f"{r2['share']:+.2f}; sq_bias taypo2 {_fmt(r2['sq_bias'])} < lvc {_fmt(r1['sq_bias'])}",
                        )
                    )
        claims.append(
            _claim(
                "H6",
                "Off-policy, TayPO-1 (LVC) and TayPO-2 Hessians are biased (systematic at the largest N), "
                "TayPO-2 less than TayPO-1 (Tang Prop. 3.4)",
                checks,
            )
        )
        checks = []
        if eps_pos and 0.0 in config.epsilons:
            for name in ("dr", "dice"):
                if name not in sampled:
                    continue
                r0 = _select(hess, estimator=name, quantity="hvp", epsilon=0.0, N=n_max)
                r1 = _select(hess, estimator=name, quantity="hvp", epsilon=max(eps_pos), N=n_max)
                if r0 and r1:
                    ratio = r1[0]["variance"] / r0[0]["variance"]
                    checks.append(
                        (
                            ratio >= 10,
                            f"{name}, N={n_max}: variance {_fmt(r0[0]['variance'])} (eps=0) -> "
                            f"{_fmt(r1[0]['variance'])} (eps={_fmt(max(eps_pos))}), x{_fmt(ratio)}",
                        )
                    )
        claims.append(
            _claim(
                "H7",
                "Importance-weighted estimators (DR, off-policy DiCE) pay for off-policyness in variance "
                "(>= 10x from eps = 0 to the largest eps)",
                checks,
            )
        )

    if comp:
        base_n, base_a, base_k = config.comp_base_n, config.alpha, config.comp_base_k
        unbiased = [e for e in sampled if ESTIMATORS[e].hessian_unbiased]
        if "lee" in config.slots:
            for key, x, base, direction, what in (
                ("C1", "K", {"N": base_n, "alpha": base_a}, +1, "grows with the number of inner steps K"),
                ("C2", "alpha", {"N": base_n, "K": base_k}, +1, "grows with the inner learning rate alpha"),
                ("C3", "N", {"alpha": base_a, "K": base_k}, -1, "shrinks with the number of trajectories N"),
            ):
                claims.append(
                    _claim(
                        key,
                        f"The compositional bias (slots lee: estimated inner values, exact Hessian and outer) {what}",
                        _trend_checks(comp, x, sampled, "lee", direction, base),
                    )
                )
        if "ell" in config.slots and len(config.comp_n) >= 1:
            n_max = max(config.comp_n)
            checks = []
            for name in sampled:
                r = _select(comp, estimator=name, slots="ell", N=n_max, alpha=base_a, K=base_k)
                if not r:
                    continue
                share = r[0]["share"]
                want_biased = not ESTIMATORS[name].hessian_unbiased
                ok = share >= 0.5 if want_biased else share < 0.5
                checks.append(
                    (
                        ok,
                        f"{name}: share {share:+.2f} ({'biased' if want_biased else 'unbiased'} expected), "
                        f"sq_bias {_fmt(r[0]['sq_bias'])}",
                    )
                )
            claims.append(
                _claim(
                    "C4",
                    f"With exact inner values (ell; N={n_max}, alpha={_fmt(base_a)}, K={base_k}) only the "
                    "Hessian bias remains: systematic for LVC / MAML, not for the Hessian-unbiased estimators",
                    checks,
                )
            )
        # C5: Liu et al.'s O(sigma_In): the noisier inner gradient (DiCE, no baseline) composes worse.
        baselined = [e for e in ("dr", "loaded_dice", "taypo2", "dice_baseline", "lvc", "maml") if e in sampled]
        checks = []
        if "lee" in config.slots and "dice" in sampled and baselined:
            other = baselined[0]
            pairs = []
            for r in _select(comp, estimator="dice", slots="lee"):
                o = _select(comp, estimator=other, slots="lee", N=r["N"], alpha=r["alpha"], K=r["K"])
                if o and o[0]["rel_bias"] < SATURATED:  # a saturated pair says nothing about the ordering
                    pairs.append((r, o[0]))
            if pairs:
                worst = min(pairs, key=lambda p: p[0]["rel_bias"] / max(p[1]["rel_bias"], 1e-300))
                ok = all(r["rel_bias"] > o["rel_bias"] for r, o in pairs)
                at = f"N={worst[0]['N']}, alpha={_fmt(worst[0]['alpha'])}, K={worst[0]['K']}"
                text = (
                    f"{len(pairs)} unsaturated sweep points; closest at {at}: dice {_fmt(worst[0]['rel_bias'])} vs "
                    f"{other} {_fmt(worst[1]['rel_bias'])}"
                )
                grads = {e: _select(hess, estimator=e, quantity="grad", epsilon=0.0) for e in ("dice", other)}
                if grads["dice"] and grads[other]:
                    n0 = min(r["N"] for r in grads["dice"])
                    v = {e: _select(grads[e], N=n0)[0]["variance"] for e in grads}
                    text += f"; inner-gradient variance at theta_0 (N={n0}): dice {_fmt(v['dice'])} vs {other} "
                    text += _fmt(v[other])
                checks.append((ok, text))
        claims.append(
            _claim(
                "C5",
                "The compositional bias grows with the inner gradient's variance (Liu et al.: O(sigma_In)): "
                "DiCE, without a baseline, has a larger one (lee rel_bias) than the baselined estimators at every "
                f"sweep point where theirs is not saturated (< {SATURATED})",
                checks,
            )
        )
    return claims


# ------------------------------------------------------------------------------------------------
# Running, tables, plots
# ------------------------------------------------------------------------------------------------


@dataclass
class AnalysisResult:
    """What ``run_analysis`` returns: the rows (plain dicts, ``RECORD_FIELDS``), the checked claims
    and the wall time."""

    config: AnalysisConfig
    studies: tuple[str, ...]
    rows: list[dict[str, Any]]
    claims: list[Claim]
    seconds: float

    @property
    def all_passed(self) -> bool:
        return all(c.status != "FAIL" for c in self.claims)


def check_studies(study: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"``, one study name or a sequence of them -> a tuple of study names; raises ValueError."""
    names = (study,) if isinstance(study, str) else tuple(study)
    if names == ("all",):
        return STUDIES
    if not names:
        raise ValueError(f"study: expected one of {', '.join((*STUDIES, 'all'))}")
    for s in names:
        if s not in STUDIES:
            raise ValueError(f"unknown study {s!r}; expected one of: {', '.join((*STUDIES, 'all'))}")
    return tuple(dict.fromkeys(names))


def run_analysis(
    config: AnalysisConfig | None = None, study: str | Sequence[str] = "all", progress: Progress | None = None
) -> AnalysisResult:
    """Run the requested studies and check the claims. ``progress``: called with one line per
    finished configuration (e.g. ``lambda s: print(s, file=sys.stderr)``)."""
    config = AnalysisConfig() if config is None else config
    if not isinstance(config, AnalysisConfig):
        raise TypeError(f"config: expected an AnalysisConfig, got {type(config).__name__}")
    studies = check_studies(study)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for s in studies:
        rows += (hessian_study if s == "hessian" else compositional_study)(config, progress)
    claims = evaluate_claims(rows, config)
    return AnalysisResult(config, studies, rows, claims, time.perf_counter() - start)


def format_claims(claims: Sequence[Claim]) -> str:
    lines = ["## Claims", ""]
    for c in claims:
        lines.append(f"- **{c.status}** [{c.key}] {c.statement}")
        lines.append(f"  - {c.evidence}")
    counts = {s: sum(c.status == s for c in claims) for s in ("PASS", "FAIL", "SKIP")}
    lines += ["", f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"]
    return "\n".join(lines)


_TABLE_COLUMNS = (
    "estimator",
    "slots",
    "quantity",
    "N",
    "epsilon",
    "alpha",
    "K",
    "bias",
    "sq_bias",
    "share",
    "rel_bias",
    "variance",
    "corr",
    "bias_oracle",
)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = _TABLE_COLUMNS) -> str:
    """A markdown table of the rows."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r[c]) if not isinstance(r[c], str) else r[c] for c in columns) + " |")
    return "\n".join(out)


def _pivot(rows, row_key: str, col_key: str, value: str, **where) -> str:
    sel = _select(rows, **where)
    if not sel:
        return ""
    cols = sorted({r[col_key] for r in sel if r[col_key] is not None})
    names = list(dict.fromkeys(r[row_key] for r in sel if r[col_key] is not None))
    out = [f"| {row_key} \\ {col_key} | " + " | ".join(_fmt(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for n in names:
        cells = []
        for c in cols:
            hit = [r for r in sel if r[row_key] == n and r[col_key] == c]
            cells.append(_fmt(hit[0][value]) if hit else "")
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def format_summary(result: AnalysisResult) -> str:
    """Compact pivot tables (bias, and corr / share where telling) for the terminal."""
    rows, cfg = result.rows, result.config
    parts = []
    if "hessian" in result.studies:
        for q in ("grad", "hvp"):
            for value in ("bias", "share", "corr"):
                t = _pivot(rows, "estimator", "N", value, study="hessian", quantity=q, epsilon=0.0)
                if t:
                    parts.append(f"### Hessian study, on-policy: {q} {value} vs N\n\n{t}")
        n_max = max(cfg.hessian_n)
        for value in ("bias", "share", "variance"):
            t = _pivot(rows, "estimator", "epsilon", value, study="hessian", quantity="hvp", N=n_max)
            if t:
                parts.append(f"### Hessian study: hvp {value} vs epsilon (N={n_max})\n\n{t}")
    if "compositional" in result.studies:
        base = {"N": cfg.comp_base_n, "alpha": cfg.alpha, "K": cfg.comp_base_k}
        for slots in cfg.slots:
            for x in ("K", "alpha", "N"):
                where = {k: v for k, v in base.items() if k != x}
                t = _pivot(rows, "estimator", x, "bias", study="compositional", slots=slots, **where)
                if t and len({r[x] for r in _select(rows, study="compositional", slots=slots, **where)}) > 1:
                    fixed = ", ".join(f"{k}={_fmt(v)}" for k, v in where.items())
                    parts.append(f"### Compositional study ({slots}): meta-gradient bias vs {x} ({fixed})\n\n{t}")
    return "\n\n".join(parts)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r[k] is None else r[k]) for k in RECORD_FIELDS})


def plot(result: AnalysisResult, out_dir: str | os.PathLike) -> list[str]:
    """PNG plots of the studies into ``out_dir`` (matplotlib, Agg); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cfg, paths = result.rows, result.config, []
    names = [e for e in cfg.estimators if e != EXACT]
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    # Distinct markers, shrinking, so that coinciding curves (Loaded DiCE, TayPO-2 and DR on-policy) stay visible.
    style = {
        n: {"color": colors[n], "marker": "osD^vxP*"[i % 8], "markersize": max(9 - 1.0 * i, 3), "alpha": 0.85}
        for i, n in enumerate(names)
    }
    if "hessian" in result.studies:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, (q, value, ylog) in zip(
            axes, (("grad", "bias", True), ("hvp", "bias", True), ("hvp", "corr", False)), strict=True
        ):
            for n in names:
                pts = _series(rows, "N", value, study="hessian", estimator=n, quantity=q, epsilon=0.0)
                if pts:
                    ls = "-" if ESTIMATORS[n].hessian_unbiased else "--"
                    ax.plot(*zip(*pts, strict=True), ls, **style[n], label=n)
            ax.set_xscale("log")
            if ylog:
                ax.set_yscale("log")
            ax.set_xlabel("N (trajectories per estimate)")
            ax.set_title(f"on-policy {q}: {value}")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle("Hessian study (K = 1 building block): bias = mean((mean est - exact)^2)")
        fig.tight_layout()
        path = os.path.join(out_dir, "hessian_vs_n.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
        if len(cfg.epsilons) > 1:
            n_max = max(cfg.hessian_n)
            fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
            for ax, (value, ylog) in zip(axes, (("bias", True), ("variance", True), ("corr", False)), strict=True):
                for n in names:
                    pts = _series(rows, "epsilon", value, study="hessian", estimator=n, quantity="hvp", N=n_max)
                    if len(pts) > 1:
                        ax.plot(*zip(*pts, strict=True), **style[n], label=n)
                if ylog:
                    ax.set_yscale("log")
                ax.set_xlabel("epsilon (off-policyness)")
                ax.set_title(f"hvp {value}, N={n_max}")
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=8)
            fig.tight_layout()
            path = os.path.join(out_dir, "hessian_vs_epsilon.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            paths.append(path)
    if "compositional" in result.studies:
        base = {"N": cfg.comp_base_n, "alpha": cfg.alpha, "K": cfg.comp_base_k}
        slots = list(cfg.slots)
        fig, axes = plt.subplots(len(slots), 3, figsize=(15, 3.6 * len(slots)), squeeze=False)
        for i, s in enumerate(slots):
            for j, x in enumerate(("K", "alpha", "N")):
                ax = axes[i][j]
                where = {k: v for k, v in base.items() if k != x}
                for n in names:
                    pts = _series(rows, x, "bias", study="compositional", estimator=n, slots=s, **where)
                    if pts:
                        ls = "-" if ESTIMATORS[n].hessian_unbiased else "--"
                        ax.plot(*zip(*pts, strict=True), ls, **style[n], label=n)
                ax.set_yscale("log")
                if x == "N":
                    ax.set_xscale("log")
                fixed = ", ".join(f"{k}={_fmt(v)}" for k, v in where.items())
                ax.set_title(f"{s}: bias vs {x} ({fixed})", fontsize=10)
                ax.set_xlabel(x)
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(
            "Compositional study: K-step meta-gradient vs oracle.maml_meta_gradient "
            "(slots: inner value, Hessian, outer; l = estimated, e = exact)"
        )
        fig.tight_layout()
        path = os.path.join(out_dir, "compositional.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(result: AnalysisResult, out_dir: str | os.PathLike, *, plots: bool = True) -> list[str]:
    """Write analysis.md (summary, claims, full table), analysis.csv, analysis.json and the plots
    into ``out_dir`` (created if needed); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    md = os.path.join(out_dir, "analysis.md")
    with open(md, "w") as f:
        f.write(f"# metakern analysis ({', '.join(result.studies)}; {result.seconds:.1f}s)\n\n")
        f.write("Config: `" + json.dumps(result.config.to_dict()) + "`\n\n")
        f.write(format_claims(result.claims) + "\n\n")
        f.write(format_summary(result) + "\n\n## All rows\n\n")
        for s in result.studies:
            f.write(f"### {s}\n\n{format_table(_select(result.rows, study=s))}\n\n")
    path_csv = os.path.join(out_dir, "analysis.csv")
    write_csv(result.rows, path_csv)
    path_json = os.path.join(out_dir, "analysis.json")
    with open(path_json, "w") as f:
        json.dump(
            {
                "config": result.config.to_dict(),
                "studies": list(result.studies),
                "seconds": result.seconds,
                "claims": [dataclasses.asdict(c) for c in result.claims],
                "rows": result.rows,
            },
            f,
            indent=1,
        )
    paths = [md, path_csv, path_json]
    if plots:
        paths += plot(result, out_dir)
    return paths


# ------------------------------------------------------------------------------------------------
# Command line: ``metakern analysis``
# ------------------------------------------------------------------------------------------------


def _csv_list(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError as exc:
            raise ValueError(f"could not parse {text!r} as a comma-separated list: {exc}") from None

    parse.__name__ = f"list of {kind.__name__}"
    return parse


def add_parser(sub: Any) -> None:
    """Register ``metakern analysis`` on an argparse sub-parser collection."""
    p = sub.add_parser(
        "analysis",
        help="bias/variance study of the meta-gradient estimators on random tabular MDPs (issue 3)",
        description=(
            "Estimate gradients, Hessian-vector products and K-step MAML meta-gradients with every estimator "
            "from N sampled trajectories on random tabular MDPs; report bias, variance and correlation "
            "against the exact oracle; check the qualitative claims (exit 1 with --strict if one fails). "
            "Writes analysis.md, analysis.csv, analysis.json and PNG plots into --out."
        ),
    )
    p.add_argument("--quick", action="store_true", help="small sweeps (about 10 s on 2 idle cores)")
    p.add_argument("--out", default="analysis-out", metavar="DIR", help="output folder (default: analysis-out)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    p.add_argument("--study", default="all", choices=(*STUDIES, "all"), help="which study (default: all)")
    p.add_argument("--n", type=_csv_list(int), metavar="N,N,...", help="N sweep for both studies")
    p.add_argument("--lrs", type=_csv_list(float), metavar="A,A,...", help="inner learning rates (compositional)")
    p.add_argument("--ks", type=_csv_list(int), metavar="K,K,...", help="inner steps K (compositional)")
    p.add_argument("--epsilons", type=_csv_list(float), metavar="E,E,...", help="off-policyness (hessian)")
    p.add_argument(
        "--estimators", type=_csv_list(str), metavar="NAME,...", help=f"subset of {', '.join((*ESTIMATORS, EXACT))}"
    )
    p.add_argument("--tasks", type=int, metavar="B", help="number of random MDPs")
    p.add_argument("--repeats", type=int, metavar="R", help="repeats per task (both studies)")
    p.add_argument("--alpha", type=float, help="base inner learning rate (default 10)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    p.add_argument("--strict", action="store_true", help="exit 1 if a claim fails")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run_cli)


def config_from_args(args: Any) -> AnalysisConfig:
    overrides: dict[str, Any] = {"seed": args.seed}
    if args.n is not None:
        overrides["hessian_n"] = overrides["comp_n"] = args.n
    if args.lrs is not None:
        overrides["comp_lrs"] = args.lrs
    if args.ks is not None:
        overrides["comp_ks"] = args.ks
    if args.epsilons is not None:
        overrides["epsilons"] = args.epsilons
    if args.estimators is not None:
        overrides["estimators"] = args.estimators
    if args.tasks is not None:
        overrides["num_tasks"] = args.tasks
    if args.repeats is not None:
        overrides["hessian_repeats"] = overrides["comp_repeats"] = args.repeats
    if args.alpha is not None:
        overrides["alpha"] = args.alpha
    return AnalysisConfig.quick(**overrides) if args.quick else AnalysisConfig(**overrides)


def run_cli(args: Any) -> int:
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"metakern analysis: error: {exc}", file=sys.stderr)
        return 2
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = run_analysis(config, args.study, progress)
    paths = write_report(result, args.out, plots=not args.no_plot)
    print(format_summary(result))
    print()
    print(format_claims(result.claims))
    print()
    print(f"{len(result.rows)} rows in {result.seconds:.1f}s; wrote {', '.join(paths)}")
    return 1 if args.strict and not result.all_passed else 0
