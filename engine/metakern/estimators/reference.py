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

These rows follow the formulas of the papers (see shared/spec/estimators.md section 1); the
reference code of each paper is the source of the conventions (gamma^t weighting, A_t given by
the caller). Done masks and off-policy ratios belong to the fused ops and are not modelled here.
"""

from __future__ import annotations

import torch

from .. import _validate


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


def lvc(logp: torch.Tensor, returns: torch.Tensor, gamma: float) -> torch.Tensor:
    """LVC (ProMP): mean_b sum_t box(l_t) gamma^t G_t; exact first derivative, Hessian without the
    H12 cross terms (biased, also on-policy)."""
    discount, _ = _check(logp, {"returns": returns}, gamma)
    return (magic_box(logp) * discount * returns).sum(1).mean()
