"""Reference surrogate objectives of the meta-gradient estimators, in plain torch.

Each function takes per-step log-probabilities ``logp`` [B, T] of B sampled trajectories (T
steps each, one trajectory per row) and returns a scalar: the batch mean of a surrogate whose
derivatives, taken by autograd, are the estimator's gradient (first order) and Hessian (second).
Notation as in the spec: l_t = logp[:, t], c_t = sum_{k<=t} l_k, box(x) = exp(x - stop_grad(x))
(value 1, derivative that of x), G_t the discounted reward-to-go, gamma^t the discount weight.

    maml_surrogate   sum_t gamma^t stop_grad(A_t) l_t                       (biased Hessian)
    dice             sum_t box(c_t) gamma^t r_t                             (Foerster et al. 2018)
    dice_baseline    dice + sum_t (1 - box(l_t)) gamma^t V_t                (Mao et al. 2019)
    loaded_dice      sum_t gamma^t A_t (box(w_t) - box(w_t - l_t)),
                     w_t = lam w_{t-1} + l_t                                 (Farquhar et al. 2019)
    lvc              sum_t box(l_t) gamma^t G_t                             (ProMP; biased Hessian)
    taypo            TayPO-K, O(K T) elementary-symmetric recurrence         (Tang et al. 2021)
    doubly_robust    the DR / V-trace / truncated-IS recursion               (Tang et al. Alg. 2)
    off_policy_dice  DiCE weighted by exp(c_t - stop_grad(c^mu_t))           (Liu et al. 2022)

These rows follow the formulas of the papers (see shared/spec/estimators.md section 1); the
reference code of each paper is the source of the conventions (gamma^t weighting, A_t given by
the caller). Off-policy estimators take the behaviour policy's log-probabilities as well. Done
masks belong to the fused ops and are not modelled here: one row is one trajectory.
"""

from __future__ import annotations

import math

import torch

from .. import _validate

MAX_LOG = 30.0  # default clamp of exponentiated log-ratios: weights up to e^30 ~ 1.1e13


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """exp(x - stop_grad(x)): 1 in value, with the derivatives of exp(x) / exp(x) at x."""
    return torch.exp(x - x.detach())


def _check(logp: torch.Tensor, others: dict[str, torch.Tensor], gamma: float) -> tuple[torch.Tensor, float]:
    _validate.tensor("logp", logp, ndim=2, layout="[B, T]", contiguous=False)
    for name, t in others.items():
        _validate.tensor(name, t, ndim=2, layout="[B, T]", contiguous=False)
        _validate.same_device(name, t, "logp", logp)
        _validate.shape(name, t, tuple(logp.shape), "[B, T] of logp")
    gamma = _validate.real("gamma", gamma, low=0.0, high=1.0)
    T = logp.shape[1]
    discount = gamma ** torch.arange(T, dtype=logp.dtype, device=logp.device)
    return discount, gamma


def maml_surrogate(logp: torch.Tensor, advantages: torch.Tensor, gamma: float) -> torch.Tensor:
    """The MAML-RL / REINFORCE surrogate mean_b sum_t gamma^t stop_grad(A_t) l_t. Its gradient is the
    policy gradient; its autodiff Hessian keeps only the sum_t grad^2 l_t A_t term (ProMP's H2)."""
    discount, _ = _check(logp, {"advantages": advantages}, gamma)
    return (discount * advantages.detach() * logp).sum(1).mean()


def dice(logp: torch.Tensor, rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """DiCE: mean_b sum_t box(c_t) gamma^t r_t; unbiased derivatives of every order."""
    discount, _ = _check(logp, {"rewards": rewards}, gamma)
    return (magic_box(torch.cumsum(logp, dim=1)) * discount * rewards).sum(1).mean()


def dice_baseline(logp: torch.Tensor, rewards: torch.Tensor, values: torch.Tensor, gamma: float) -> torch.Tensor:
    """DiCE with the any-order baseline: DiCE + mean_b sum_t (1 - box(l_t)) gamma^t V_t. The baseline
    term is 0 in value and in expectation for any state-dependent V; it reduces variance."""
    discount, _ = _check(logp, {"rewards": rewards, "values": values}, gamma)
    baseline = ((1 - magic_box(logp)) * discount * values).sum(1).mean()
    return dice(logp, rewards, gamma) + baseline


def loaded_dice(logp: torch.Tensor, advantages: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Loaded DiCE: mean_b sum_t gamma^t A_t (box(w_t) - box(w_t - l_t)), w_t = lam w_{t-1} + l_t.
    lam = 1 keeps every dependency (unbiased, = DiCE with a critic); lam = 0 only the current
    step's (an LVC-like Hessian)."""
    discount, _ = _check(logp, {"advantages": advantages}, gamma)
    lam = _validate.real("lam", lam, low=0.0, high=1.0)
    w, prev = [], torch.zeros_like(logp[:, 0])
    for t in range(logp.shape[1]):
        prev = lam * prev + logp[:, t]
        w.append(prev)
    w = torch.stack(w, dim=1)
    return (discount * advantages * (magic_box(w) - magic_box(w - logp))).sum(1).mean()


def e_maml_term(logp: torch.Tensor, post_update_returns: torch.Tensor | float) -> torch.Tensor:
    """E-MAML's exploration term (Stadie et al. 2018; ProMP formulation II): mean_b stop_grad(R'_b)
    sum_t l_t, with R' the return of the post-update trajectories (a number or [B])."""
    _check(logp, {}, 1.0)
    R = torch.as_tensor(post_update_returns, dtype=logp.dtype, device=logp.device).detach()
    return (R.reshape(-1, 1) * logp).sum(1).mean() if R.ndim else (R * logp).sum(1).mean()


def lvc(logp: torch.Tensor, returns: torch.Tensor, gamma: float) -> torch.Tensor:
    """LVC (ProMP): mean_b sum_t box(l_t) gamma^t G_t; exact first derivative, Hessian without the
    H12 cross terms (biased, also on-policy)."""
    discount, _ = _check(logp, {"returns": returns}, gamma)
    return (magic_box(logp) * discount * returns).sum(1).mean()


def _ratios_log(logp: torch.Tensor, behaviour_logp: torch.Tensor, max_log_ratio: float = MAX_LOG) -> torch.Tensor:
    """log rho_t = l_t - stop_grad(behaviour l_t), clamped at ``max_log_ratio`` (a clamped step has
    derivative 0): differentiable in logp only, and exp() of it cannot overflow."""
    return torch.clamp(logp - behaviour_logp.detach(), max=max_log_ratio)


def taypo(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    returns: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    order: int,
    *,
    max_log_ratio: float = MAX_LOG,
) -> torch.Tensor:
    """TayPO-K (Tang et al. 2021): sum_{k=1..K} U_k with
    U_k = sum_{t_1 < ... < t_k} gamma^{t_k} prod_i (rho_{t_i} - 1) stop_grad(G_{t_k} - V_{t_k}),
    computed in O(K T) by the elementary-symmetric recurrence over x_t = rho_t - 1:
    E_0(t) = 1, E_k(t) = E_k(t-1) + x_t E_{k-1}(t-1), U_k = sum_t gamma^t A_t x_t E_{k-1}(t-1).
    (The constant V_0 term is omitted: it has no derivatives.) On-policy (behaviour = logp) its
    derivatives are unbiased up to order K; K = 1 has LVC's Hessian."""
    discount, _ = _check(logp, {"behaviour_logp": behaviour_logp, "returns": returns, "values": values}, gamma)
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order: expected a positive int, got {order!r}")
    x = torch.exp(_ratios_log(logp, behaviour_logp, max_log_ratio)) - 1
    adv = discount * (returns - values).detach()
    E = [torch.ones_like(x[:, 0])] + [torch.zeros_like(x[:, 0]) for _ in range(order)]  # E_k(t-1)
    total = torch.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        xt = x[:, t]
        total = total + adv[:, t] * xt * sum(E[k - 1] for k in range(1, order + 1))
        E = [E[0]] + [E[k] + xt * E[k - 1] for k in range(1, order + 1)]
    return total.mean()


def doubly_robust(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    *,
    rho_max: float = float("inf"),
    c_max: float = float("inf"),
    max_log_ratio: float = MAX_LOG,
) -> torch.Tensor:
    """The off-policy evaluation recursion of Tang et al. (Alg. 2), v_0 averaged over the batch:
    v_t = V_t + min(rho_t, rho_max) (r_t + gamma V_{t+1} - V_t) + gamma min(rho_t, c_max) (v_{t+1} - V_{t+1}),
    V_T = v_T = 0. No truncation: doubly robust (= Loaded DiCE with lambda = 1); V = 0 as well:
    step-wise importance sampling (= DiCE); rho_max = c_max = 1: V-trace / truncated IS.

    Written unrolled, v_0 = V_0 + sum_t gamma^t w_t delta_t with delta_t = r_t + gamma V_{t+1} - V_t and
    w_t = prod_{s<t} c_s * rho_t (c_s = min(rho_s, c_max), rho_t clipped at rho_max), so that the weight
    is formed in log space: log w_t is clamped at ``max_log_ratio`` (as is each step's log-ratio), so it
    never overflows, and a clamped weight is constant (derivative 0). Where nothing is clamped this is
    the recursion above exactly."""
    _check(logp, {"behaviour_logp": behaviour_logp, "rewards": rewards, "values": values}, gamma)
    rho_max = _validate.real("rho_max", rho_max, low=0.0)
    c_max = _validate.real("c_max", c_max, low=0.0)
    log_rho = logp - behaviour_logp.detach()

    def log_clipped(bar: float) -> torch.Tensor:  # log min(rho, bar), and at most max_log_ratio
        return torch.clamp(log_rho, max=min(max_log_ratio, math.log(bar) if bar > 0 else -math.inf))

    log_rho_bar, log_c = log_clipped(rho_max), log_clipped(c_max)
    T = logp.shape[1]
    v0 = values[:, 0].clone()
    log_trace = torch.zeros_like(v0)  # sum_{s<t} log c_s
    for t in range(T):
        V_next = values[:, t + 1] if t + 1 < T else torch.zeros_like(v0)
        delta = rewards[:, t] + gamma * V_next - values[:, t]
        w = torch.exp(torch.clamp(log_trace + log_rho_bar[:, t], max=max_log_ratio))
        v0 = v0 + gamma**t * w * delta
        log_trace = log_trace + log_c[:, t]
    return v0.mean()


def off_policy_dice(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    rewards: torch.Tensor,
    gamma: float,
    *,
    max_log_weight: float = MAX_LOG,
) -> torch.Tensor:
    """Off-policy DiCE (Liu et al. 2022, IPD): sum_t exp(c_t - stop_grad(c^mu_t)) gamma^t r_t with
    c and c^mu the cumulative current and behaviour log-probabilities: DiCE's derivatives, importance
    weighted to the behaviour policy's samples. Equals ``dice`` when behaviour = logp. The log-weight
    is clamped at ``max_log_weight`` (derivative 0 beyond), so the weights cannot overflow."""
    discount, _ = _check(logp, {"behaviour_logp": behaviour_logp, "rewards": rewards}, gamma)
    log_weight = torch.cumsum(logp, 1) - torch.cumsum(behaviour_logp, 1).detach()
    weight = torch.exp(torch.clamp(log_weight, max=max_log_weight))
    return (weight * discount * rewards).sum(1).mean()
