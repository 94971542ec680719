"""Exact tabular oracle: values, policy gradients, Hessian-vector products and K-step MAML
meta-gradients of tabular softmax policies, batched over tasks, by linear algebra.

For a batch of MDPs (transitions P [B, S, A, S], expected rewards R [B, S, A], initial state
distribution rho [B, S], discount gamma) and softmax policies pi = softmax(theta) over actions
(theta [B, S, A]):

    P_pi = sum_a pi(a|s) P[s, a, :],   r_pi = sum_a pi(a|s) R[s, a],   M = (I - gamma P_pi)^{-1}
    V = M r_pi,   Q = R + gamma P V,   A = Q - V,   J = rho . V
    d = M^T rho   (discounted state visitation from rho)
    dJ/dtheta[s, a] = d(s) pi(a|s) A(s, a)                              (policy-gradient theorem)

The Hessian-vector product is the directional derivative of that gradient along v:

    Dpi = pi * (v - <pi, v>_a)
    DV  = M u,               u(s) = sum_a Dpi(s, a) Q(s, a)
    DA  = gamma P DV - DV
    Dd  = M^T (gamma (DP_pi)^T d),   DP_pi(s, :) = sum_a Dpi(s, a) P[s, a, :]
    H v = Dd pi A + d Dpi A + d pi DA

so one LU factorisation of I - gamma P_pi per task serves V, d and every HVP (two triangular
solves each): O(S^3) once, then O(S^2 A) per HVP, never a (S A) x (S A) matrix. The exact K-step
MAML meta-gradient of J(theta_K), theta_{k+1} = theta_k + alpha grad J(theta_k), is the reverse
pass v <- v + alpha H(theta_k) v from v = grad J(theta_K) (H is symmetric), reusing the
factorisations of the forward pass.

Everything is float64 by default (float32 accepted); autograd is not needed and not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import _backend, _validate

_FLOATS = (torch.float32, torch.float64)


@dataclass(frozen=True)
class TabularMDP:
    """A batch of B tabular MDPs with S states and A actions.

    P: [B, S, A, S] transition probabilities (rows sum to 1); R: [B, S, A] expected rewards;
    init: [B, S] initial state distribution; gamma: discount in [0, 1).
    """

    P: torch.Tensor
    R: torch.Tensor
    init: torch.Tensor
    gamma: float

    def __post_init__(self) -> None:
        P = _validate.tensor("P", self.P, ndim=4, layout="[B, S, A, S]", dtypes=_FLOATS, contiguous=False)
        B, S, A, S2 = P.shape
        if S2 != S:
            raise ValueError(f"P: expected shape [B, S, A, S] with matching S, got {tuple(P.shape)}")
        R = _validate.tensor("R", self.R, ndim=3, layout="[B, S, A]", dtypes=_FLOATS, contiguous=False)
        init = _validate.tensor("init", self.init, ndim=2, layout="[B, S]", dtypes=_FLOATS, contiguous=False)
        for name, t in (("R", R), ("init", init)):
            _validate.same_device(name, t, "P", P)
            _validate.same_dtype(name, t, "P", P)
        _validate.shape("R", R, (B, S, A), "[B, S, A] of P")
        _validate.shape("init", init, (B, S), "[B, S] of P")
        gamma = _validate.real("gamma", self.gamma, low=0.0)
        if gamma >= 1.0:
            raise ValueError(f"gamma: expected a discount in [0, 1), got {gamma}")
        object.__setattr__(self, "gamma", gamma)
        tol = 1e-6 if P.dtype == torch.float64 else 1e-4
        if (P < 0).any() or not torch.allclose(P.sum(-1), torch.ones((), dtype=P.dtype, device=P.device), atol=tol):
            raise ValueError("P: every P[b, s, a, :] must be a probability distribution (non-negative, sums to 1)")
        if (init < 0).any() or not torch.allclose(
            init.sum(-1), torch.ones((), dtype=P.dtype, device=P.device), atol=tol
        ):
            raise ValueError("init: every init[b, :] must be a probability distribution")

    @property
    def num_tasks(self) -> int:
        return self.P.shape[0]

    @property
    def num_states(self) -> int:
        return self.P.shape[1]

    @property
    def num_actions(self) -> int:
        return self.P.shape[2]


def random_mdps(
    num_tasks: int,
    num_states: int = 20,
    num_actions: int = 5,
    *,
    gamma: float = 0.8,
    concentration: float = 0.001,
    start_state: int | None = 0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> TabularMDP:
    """Random MDPs as in the gradient-bias study (Liu et al. 2022): P[s, a, :] ~ Dirichlet(concentration)
    (0.001: nearly deterministic), R[s, a] ~ U(0, 1), start in ``start_state`` (uniform if None).

    Dirichlet draws with tiny concentrations underflow to all zeros in float64 when sampled as
    normalised Gamma variates; here they are drawn in log space (log G(c) = log G(c + 1) + log U / c)
    and normalised with a softmax, so every row is a valid distribution.
    """
    for name, value in (("num_tasks", num_tasks), ("num_states", num_states), ("num_actions", num_actions)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    concentration = _validate.real("concentration", concentration, low=0.0)
    if concentration <= 0:
        raise ValueError(f"concentration: expected a positive number, got {concentration}")
    g = torch.Generator().manual_seed(seed)
    shape = (num_tasks, num_states, num_actions, num_states)
    alpha = torch.full(shape, concentration + 1.0, dtype=torch.float64)
    log_gamma = torch._standard_gamma(alpha, generator=g).log()
    log_u = torch.rand(shape, generator=g, dtype=torch.float64).clamp_min(1e-300).log()
    P = torch.softmax(log_gamma + log_u / concentration, dim=-1)
    R = torch.rand(num_tasks, num_states, num_actions, generator=g, dtype=torch.float64)
    if start_state is None:
        init = torch.full((num_tasks, num_states), 1.0 / num_states, dtype=torch.float64)
    else:
        if not 0 <= start_state < num_states:
            raise ValueError(f"start_state: expected an index in [0, {num_states}), got {start_state}")
        init = torch.zeros(num_tasks, num_states, dtype=torch.float64)
        init[:, start_state] = 1.0
    return TabularMDP(*(t.to(device=device, dtype=dtype) for t in (P, R, init)), gamma=gamma)


class Evaluation(NamedTuple):
    """Exact evaluation of softmax(theta) in each task (see the module docstring)."""

    pi: torch.Tensor  # [B, S, A]
    lu: torch.Tensor  # [B, S, S] LU factors of I - gamma P_pi
    pivots: torch.Tensor  # [B, S]
    V: torch.Tensor  # [B, S]
    Q: torch.Tensor  # [B, S, A]
    advantages: torch.Tensor  # [B, S, A]
    visitation: torch.Tensor  # [B, S]: d = M^T init
    objective: torch.Tensor  # [B]: J = init . V


def _check_theta(mdp: TabularMDP, theta: torch.Tensor, name: str = "theta") -> torch.Tensor:
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
    theta = _validate.tensor(name, theta, ndim=3, layout="[B, S, A]", dtypes=_FLOATS, contiguous=False)
    _validate.same_device(name, theta, "mdp.P", mdp.P)
    _validate.same_dtype(name, theta, "mdp.P", mdp.P)
    _validate.shape(name, theta, tuple(mdp.R.shape), "[B, S, A] of the MDPs")
    return theta


def _solve(factors: tuple[torch.Tensor, torch.Tensor], rhs: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
    """M rhs (or M^T rhs) for rhs [B, S] or [B, K, S], from the LU factors."""
    lu, pivots = factors
    vec = rhs.dim() == 2
    cols = rhs.unsqueeze(-1) if vec else rhs.transpose(-1, -2)
    out = torch.linalg.lu_solve(lu, pivots, cols, adjoint=transpose)
    return out.squeeze(-1) if vec else out.transpose(-1, -2)


def evaluate(mdp: TabularMDP, theta: torch.Tensor) -> Evaluation:
    """Exact V, Q, advantages, visitation and objective of softmax(theta), one LU per task."""
    theta = _check_theta(mdp, theta)
    pi = torch.softmax(theta, dim=-1)
    P_pi = torch.einsum("bsa,bsat->bst", pi, mdp.P)
    r_pi = (pi * mdp.R).sum(-1)
    eye = torch.eye(mdp.num_states, dtype=theta.dtype, device=theta.device)
    lu, pivots = torch.linalg.lu_factor(eye - mdp.gamma * P_pi)
    V = _solve((lu, pivots), r_pi)
    Q = mdp.R + mdp.gamma * torch.einsum("bsat,bt->bsa", mdp.P, V)
    d = _solve((lu, pivots), mdp.init, transpose=True)
    return Evaluation(pi, lu, pivots, V, Q, Q - V[..., None], d, (mdp.init * V).sum(-1))


def policy_gradient(mdp: TabularMDP, theta: torch.Tensor, ev: Evaluation | None = None) -> torch.Tensor:
    """dJ/dtheta [B, S, A] = d(s) pi(a|s) A(s, a)."""
    ev = evaluate(mdp, theta) if ev is None else ev
    return ev.visitation[..., None] * ev.pi * ev.advantages


def hvp(mdp: TabularMDP, theta: torch.Tensor, v: torch.Tensor, ev: Evaluation | None = None) -> torch.Tensor:
    """Exact Hessian-vector product H(theta) v of J, for v [B, S, A] or K directions [B, K, S, A]."""
    ev = evaluate(mdp, theta) if ev is None else ev
    v = _validate.tensor("v", v, dtypes=_FLOATS, contiguous=False)
    single = v.dim() == 3
    if single:
        v = v.unsqueeze(1)
    B, S, A = ev.pi.shape
    if v.dim() != 4 or v.shape[0] != B or tuple(v.shape[2:]) != (S, A):
        raise ValueError(f"v: expected shape [B, S, A] = {(B, S, A)} or [B, K, S, A], got {tuple(v.shape)}")
    _validate.same_device("v", v, "theta", ev.pi)
    gamma = mdp.gamma
    pi, Q, adv, d = ev.pi[:, None], ev.Q[:, None], ev.advantages[:, None], ev.visitation[:, None]
    dpi = pi * (v - (pi * v).sum(-1, keepdim=True))  # [B, K, S, A]
    dV = _solve((ev.lu, ev.pivots), (dpi * Q).sum(-1))  # [B, K, S]
    dA = gamma * torch.einsum("bsat,bkt->bksa", mdp.P, dV) - dV[..., None]
    dP_pi = torch.einsum("bksa,bsat->bkst", dpi, mdp.P)
    dd = _solve((ev.lu, ev.pivots), gamma * torch.einsum("bks,bkst->bkt", d, dP_pi), transpose=True)
    out = dd[..., None] * pi * adv + d[..., None] * (dpi * adv + pi * dA)
    return out[:, 0] if single else out


def hessian(mdp: TabularMDP, theta: torch.Tensor, ev: Evaluation | None = None) -> torch.Tensor:
    """Full Hessian of J w.r.t. theta, [B, S*A, S*A] (row-major (s, a) order), from S*A HVPs."""
    ev = evaluate(mdp, theta) if ev is None else ev
    B, S, A = ev.pi.shape
    basis = torch.eye(S * A, dtype=theta.dtype, device=theta.device).reshape(1, S * A, S, A).expand(B, -1, -1, -1)
    return hvp(mdp, theta, basis, ev).reshape(B, S * A, S * A)


class MetaGradient(NamedTuple):
    meta_gradient: torch.Tensor  # [B, S, A]: d J(theta_K) / d theta_0
    objective: torch.Tensor  # [B]: J(theta_K), the post-adaptation value
    thetas: list[torch.Tensor] | None  # theta_0 .. theta_K (None when not asked for)


def _oracle_backend(theta: torch.Tensor) -> str:
    """``cpp`` (cpp/oracle, float64 on CPU) or ``reference`` (the torch linear algebra here)."""
    if theta.device.type != "cpu" or theta.dtype != torch.float64:
        return "reference"
    return _backend.select("oracle", "cpu", preference=("cpp",))


def _maml_meta_gradient_cpp(
    mdp: TabularMDP, theta0: torch.Tensor, alpha: float, steps: int, return_thetas: bool
) -> MetaGradient:
    P, R, init, theta0 = (t.contiguous() for t in (mdp.P, mdp.R, mdp.init, theta0))
    B, S, A = theta0.shape
    meta = torch.empty_like(theta0)
    objective = theta0.new_empty(B)
    thetas = theta0.new_empty(steps + 1, B, S, A) if return_thetas else None
    _backend.cpp_module().oracle_maml_meta_gradient(
        P.data_ptr(), R.data_ptr(), init.data_ptr(), theta0.data_ptr(), B, S, A, mdp.gamma, alpha, steps,
        meta.data_ptr(), objective.data_ptr(), 0 if thetas is None else thetas.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return MetaGradient(meta, objective, None if thetas is None else list(thetas.unbind(0)))


def maml_meta_gradient(
    mdp: TabularMDP, theta0: torch.Tensor, alpha: float, steps: int, *, return_thetas: bool = True
) -> MetaGradient:
    """Exact K-step MAML meta-gradient with exact inner policy-gradient steps
    theta_{k+1} = theta_k + alpha grad J(theta_k): K + 1 factorisations and K HVPs per task.
    ``return_thetas=False`` skips writing theta_0 .. theta_K out (``thetas`` is then None): a
    [K+1, B, S, A] output the meta-gradient does not need.

    float64 CPU tensors run the C++ kernel (cpp/oracle: 8 tasks per SIMD vector, LU without
    pivoting since I - gamma P_pi is diagonally dominant); other inputs, or
    ``metakern.use_backend("reference")``, use the torch linear algebra of this module."""
    theta0 = _check_theta(mdp, theta0, "theta0")
    alpha = _validate.real("alpha", alpha)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected a non-negative int, got {steps!r}")
    if not isinstance(return_thetas, bool):
        raise TypeError(f"return_thetas: expected a bool, got {type(return_thetas).__name__}")
    if _oracle_backend(theta0) == "cpp":
        return _maml_meta_gradient_cpp(mdp, theta0, alpha, steps, return_thetas)
    thetas, evals = [theta0], []
    for _ in range(steps):
        evals.append(evaluate(mdp, thetas[-1]))
        thetas.append(thetas[-1] + alpha * policy_gradient(mdp, thetas[-1], evals[-1]))
    last = evaluate(mdp, thetas[-1])
    v = policy_gradient(mdp, thetas[-1], last)
    for k in reversed(range(steps)):
        v = v + alpha * hvp(mdp, thetas[k], v, evals[k])
    return MetaGradient(v, last.objective, thetas if return_thetas else None)


class Trajectories(NamedTuple):
    """N sampled trajectories of T steps per task: [B, N, T] each."""

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor  # R[s_t, a_t] (the MDPs' rewards are expected rewards)
    logp: torch.Tensor  # log pi(a_t | s_t) under the sampling policy


def _categorical(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: index of the first cumulative probability above ``uniform`` (rows of probs)."""
    cdf = torch.cumsum(probs, dim=-1)
    idx = torch.searchsorted(cdf, (uniform * cdf[..., -1]).unsqueeze(-1)).squeeze(-1)
    return idx.clamp_max(probs.shape[-1] - 1)


def finite_horizon_value(mdp: TabularMDP, theta: torch.Tensor, horizon: int) -> torch.Tensor:
    """Exact E[sum_{t<T} gamma^t r_t] [B] under softmax(theta), by T steps of dynamic programming."""
    theta = _check_theta(mdp, theta)
    pi = torch.softmax(theta, dim=-1)
    P_pi = torch.einsum("bsa,bsat->bst", pi, mdp.P)
    r_pi = (pi * mdp.R).sum(-1)
    V = torch.zeros_like(r_pi)
    for _ in range(horizon):
        V = r_pi + mdp.gamma * torch.einsum("bst,bt->bs", P_pi, V)
    return (mdp.init * V).sum(-1)


def sample_trajectories(
    mdp: TabularMDP, theta: torch.Tensor, num_trajectories: int, horizon: int, *, seed: int = 0
) -> Trajectories:
    """Roll out softmax(theta) in every task: N trajectories of T steps each, vectorised over tasks
    and trajectories (one loop over time), seeded and reproducible."""
    theta = _check_theta(mdp, theta)
    for name, value in (("num_trajectories", num_trajectories), ("horizon", horizon)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    B, S, _ = theta.shape
    N, T = num_trajectories, horizon
    g = torch.Generator(device=theta.device).manual_seed(seed)
    log_pi = torch.log_softmax(theta, dim=-1)
    tasks = torch.arange(B, device=theta.device)[:, None].expand(B, N)
    uniform = torch.rand(2 * T + 1, B, N, generator=g, dtype=theta.dtype, device=theta.device)
    s = _categorical(mdp.init[:, None, :].expand(B, N, S), uniform[0])
    out = {k: [] for k in Trajectories._fields}
    for t in range(T):
        a = _categorical(log_pi[tasks, s].exp(), uniform[1 + 2 * t])
        out["states"].append(s)
        out["actions"].append(a)
        out["rewards"].append(mdp.R[tasks, s, a])
        out["logp"].append(log_pi[tasks, s, a])
        s = _categorical(mdp.P[tasks, s, a], uniform[2 + 2 * t])
    return Trajectories(*(torch.stack(out[k], dim=-1) for k in Trajectories._fields))
