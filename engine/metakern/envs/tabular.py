"""Tabular MDPs (the RL^2 benchmark of Duan et al. 2016): S states, A actions, a random MDP per task.

Rules (pytorch-maml-rl ``maml_rl/envs/mdp.py`` ``TabularMDPEnv`` @21d4ba1, read in the code, which the
spec cites; the RL^2 paper's wording "the mean parameter [of a unit-variance Gaussian reward] is
sampled from N(1, 1)" is recalled, not re-read):

* A task is P[s, a, :] ~ Dirichlet(1) (uniform on the simplex) and reward means R[s, a] ~ Normal(1, 1).
* An episode starts in state 0 (``start_state="fixed"``, RL^2: "an episode always starts on the first
  state"; pytorch-maml-rl does the same) or in a uniform state (``"uniform"``).
* Action a in state s pays R[s, a] + reward_std * noise and moves to s' ~ P[s, a, :]. pytorch-maml-rl
  draws the reward as ``normal(mean, 1.0)``, so the default is ``reward_std=1.0``; ``reward_std=0``
  pays the mean itself.
* No termination: the driver's time limit ends the episode (RL^2: 10 steps per episode, trials of
  n in {10, 25, 50, 75, 100} episodes in one MDP; defaults ``max_steps=10``, ``episodes_per_trial=10``).
* Observation: one-hot of the state, float32 [S] (``obs="one_hot"``, default), or the state index as a
  float32 [1] (``obs="index"``, pytorch-maml-rl's observation). The recurrent agent's previous
  action / reward / done inputs come from the driver (``BatchedEnv.prev_action`` etc.).

Where this differs from the reference code, and why:

* Randomness. Every draw inside a step comes from the step's 64 counter-based bits ``rng``: bits
  40..63 give u = ``rng_unit(rng)`` and the next state is the inverse CDF of the task's float32
  cumulative transition table (``cdf``, computed once when the pool is built); bits 0..15 index a
  table of 2^16 float32 noise atoms. The noise is therefore *not* an exact Gaussian: it is the
  discrete distribution of the 2^16 conditional means E[Z | Z in bin k] of equiprobable bins of
  N(0, 1), rescaled to unit variance (exact mean 0 and variance 1; tails cut at about 4.4 sigma).
  Box-Muller in float32 would need logf/cosf/sqrtf, which differ by an ulp between numpy, glibc and
  CUDA, and any a * b + c may be contracted into an FMA by nvcc; a table lookup and one float add
  are bit-identical everywhere, which the numpy reference and the compiled kernels need.
* Transitions. The sampler draws s' with probability (ceil(2^24 cdf[s']) - ceil(2^24 cdf[s'-1])) / 2^24,
  i.e. the float32 CDF on the 2^24-point grid of u; these *effective* probabilities (within ~1e-7 of
  the Dirichlet draw) are ``family.transitions`` and are what the exact solutions use, so they are
  exact for the simulator, not only for the float64 draw.
* Tasks are generated per task from ``SeedSequence([task_seed, split_id, t])`` (split_id 0 for
  ``"train"``, 1 for ``"test"``): task t is the same whatever the pool size, and the two splits
  never share a generator (disjoint seed ranges). numpy's generator is not pytorch-maml-rl's
  ``RandomState``, so the MDPs are the same distribution, not the same draws.

Exact solutions (``family.finite_horizon`` and ``family.discounted``, dispatching ``family.exact``):
optimal values / policies by backward induction over the episode horizon, the value of a given
tabular policy, and for discounted infinite-horizon problems V/Q of a policy through
``metakern.oracle.evaluate`` plus the optimal policy by value iteration polished with policy
iteration, all in torch float64.

The compiled kernel is ``cpp/envs/tabular.h``; ``ref_*`` below is its readable reference.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .. import oracle
from .core import BatchedEnv, Family, StateSpec, rng_below, rng_unit

NOISE_BITS = 16
NOISE_MASK = (1 << NOISE_BITS) - 1
SPLITS = {"train": 0, "test": 1}
START_STATES = ("fixed", "uniform")
OBS_MODES = ("one_hot", "index")


def _check_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def normal_noise_table(bits: int = NOISE_BITS) -> np.ndarray:
    """The 2^bits equiprobable atoms of the reward noise (float64, ascending): the conditional means
    of N(0, 1) on the bins between its k / 2^bits quantiles, rescaled to unit variance. The table is
    antisymmetric, so its mean is exactly 0 after rounding to float32 too."""
    n = 1 << bits
    q = torch.arange(n + 1, dtype=torch.float64) / n
    edges = torch.special.ndtri(q)  # -inf .. +inf
    pdf = torch.exp(-0.5 * edges * edges) / np.sqrt(2.0 * np.pi)
    pdf[0] = pdf[-1] = 0.0
    atoms = (pdf[:-1] - pdf[1:]) * n
    atoms = 0.5 * (atoms - atoms.flip(0))  # exact antisymmetry
    atoms = atoms / atoms.square().mean().sqrt()
    return atoms.numpy()


def tabular_tasks(
    num_tasks: int, num_states: int = 10, num_actions: int = 5, *, split: str = "train", task_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """RL^2 tasks: (transitions float64 [N, S, A, S] ~ Dirichlet(1), reward means float32 [N, S, A]
    ~ Normal(1, 1)). Task t of a split comes from ``SeedSequence([task_seed, split_id, t])``."""
    N = _check_int("num_tasks", num_tasks)
    S = _check_int("num_states", num_states)
    A = _check_int("num_actions", num_actions)
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    task_seed = _check_int("task_seed", task_seed, low=0)
    P = np.empty((N, S, A, S), dtype=np.float64)
    R = np.empty((N, S, A), dtype=np.float32)
    ones = np.ones(S)
    for t in range(N):
        g = np.random.default_rng(np.random.SeedSequence([task_seed, SPLITS[split], t]))
        P[t] = g.dirichlet(ones, size=(S, A))
        R[t] = g.normal(1.0, 1.0, size=(S, A))
    return P, R


def transition_cdf(transitions: np.ndarray) -> np.ndarray:
    """The float32 inverse-CDF table the kernels sample from: sequential float32 cumulative sums,
    clipped to 1, and 1 exactly from the last state of positive probability on (so a uniform
    u < 1 always lands on a state of positive probability)."""
    P = np.asarray(transitions)
    c = np.minimum(np.cumsum(P.astype(np.float32), axis=-1, dtype=np.float32), np.float32(1.0))
    S = P.shape[-1]
    last = S - 1 - np.argmax((P > 0)[..., ::-1], axis=-1)  # index of the last positive entry
    c[np.arange(S) >= last[..., None]] = np.float32(1.0)
    return c


def effective_transitions(cdf: np.ndarray) -> np.ndarray:
    """The exact probabilities (float64) with which the kernels draw each next state from ``cdf``:
    u takes the 2^24 values k / 2^24, and s' is the first j with u < cdf[j]."""
    scaled = np.ceil(cdf.astype(np.float64) * 16777216.0)
    counts = np.diff(scaled, axis=-1, prepend=0.0)
    return counts / 16777216.0


class FiniteHorizonSolution(NamedTuple):
    """Exact finite-horizon quantities per task (``H`` = horizon, values are expected sums of
    ``gamma^t r_t`` over t < H; index t is the number of steps already taken)."""

    V_opt: torch.Tensor  # [N, H+1, S] optimal values-to-go (V_opt[:, H] = 0)
    Q_opt: torch.Tensor  # [N, H, S, A]
    policy_opt: torch.Tensor  # [N, H, S] int64, an optimal (greedy, first-max) action
    value_opt: torch.Tensor  # [N] optimal expected episode return from the start distribution
    V_pi: torch.Tensor | None  # [N, H+1, S] values-to-go of the given policy
    Q_pi: torch.Tensor | None  # [N, H, S, A]
    value_pi: torch.Tensor | None  # [N] expected episode return of the given policy


class DiscountedSolution(NamedTuple):
    """Exact discounted infinite-horizon quantities per task."""

    V_opt: torch.Tensor  # [N, S]
    Q_opt: torch.Tensor  # [N, S, A]
    policy_opt: torch.Tensor  # [N, S] int64, an optimal deterministic policy
    value_opt: torch.Tensor  # [N] init . V_opt
    V_pi: torch.Tensor | None  # [N, S] (metakern.oracle.evaluate)
    Q_pi: torch.Tensor | None  # [N, S, A]
    value_pi: torch.Tensor | None  # [N]


class TabularMDPFamily(Family):
    """RL^2 tabular MDP rules with a task pool (see the module docstring).

    Args:
        num_states, num_actions: S and A (RL^2: 10 and 5).
        num_tasks: pool size (RL^2 draws a fresh MDP per trial; a trial here draws its task
            uniformly from the pool).
        split: ``"train"`` or ``"test"`` (disjoint generators).
        task_seed: base seed of the task generator.
        start_state: ``"fixed"`` (state 0) or ``"uniform"``.
        reward_std: standard deviation of the reward noise (1.0 as in pytorch-maml-rl; 0: the mean).
        obs: ``"one_hot"`` (float32 [S]) or ``"index"`` (float32 [1]).
        transitions, reward_means: explicit tasks ([N, S, A, S] rows summing to 1, and [N, S, A])
            instead of generated ones (num_states / num_actions / num_tasks are then taken from them).
    """

    name = "tabular"
    action_dim = 1
    reward_dim = 1
    obs_dtype = torch.float32

    def __init__(
        self,
        num_states: int = 10,
        num_actions: int = 5,
        num_tasks: int = 1000,
        *,
        split: str = "train",
        task_seed: int = 0,
        start_state: str = "fixed",
        reward_std: float = 1.0,
        obs: str = "one_hot",
        transitions: np.ndarray | torch.Tensor | None = None,
        reward_means: np.ndarray | torch.Tensor | None = None,
    ):
        if start_state not in START_STATES:
            raise ValueError(f"start_state must be 'fixed' or 'uniform', got {start_state!r}")
        if obs not in OBS_MODES:
            raise ValueError(f"obs must be 'one_hot' or 'index', got {obs!r}")
        if isinstance(reward_std, bool) or not isinstance(reward_std, (int, float, np.floating)):
            raise TypeError(f"reward_std must be a number, got {type(reward_std).__name__}")
        if not np.isfinite(reward_std) or reward_std < 0:
            raise ValueError(f"reward_std must be a finite number >= 0, got {reward_std}")
        if (transitions is None) != (reward_means is None):
            raise ValueError("give both transitions and reward_means, or neither")
        if transitions is None:
            P, R = tabular_tasks(num_tasks, num_states, num_actions, split=split, task_seed=task_seed)
        else:
            P = np.asarray(transitions.cpu() if isinstance(transitions, torch.Tensor) else transitions, np.float64)
            R = np.asarray(reward_means.cpu() if isinstance(reward_means, torch.Tensor) else reward_means, np.float32)
            if P.ndim != 4 or P.shape[1] != P.shape[3] or min(P.shape) < 1:
                raise ValueError(f"transitions must have shape (N, S, A, S), got {P.shape}")
            if R.shape != P.shape[:3]:
                raise ValueError(f"reward_means must have shape {P.shape[:3]} (N, S, A), got {R.shape}")
            if not (np.isfinite(P).all() and (P >= 0).all() and np.allclose(P.sum(-1), 1.0, atol=1e-5)):
                raise ValueError("every transitions[n, s, a, :] must be a probability distribution")
            if not np.isfinite(R).all():
                raise ValueError("reward_means must be finite (in float32)")
        self.num_states = int(P.shape[1])
        self.num_actions = int(P.shape[2])
        self.start_state = start_state
        self.reward_std = float(reward_std)
        self.obs_mode = obs
        self.obs_shape = (self.num_states,) if obs == "one_hot" else (1,)
        cdf = transition_cdf(P)
        self.cdf = torch.from_numpy(cdf)
        self.reward_mean = torch.from_numpy(np.ascontiguousarray(R))
        self.noise = torch.from_numpy((normal_noise_table() * self.reward_std).astype(np.float32))
        self._noise_np = self.noise.numpy().copy()
        # float64 truth for the exact solutions (CPU): what the kernels actually sample
        self.transitions = torch.from_numpy(effective_transitions(cdf))
        self.reward_means = self.reward_mean.to(torch.float64) + float(self._noise_np.astype(np.float64).mean())

    # -- Family interface --------------------------------------------------------------------------

    def state_spec(self):
        return {"state": StateSpec((), torch.int32)}

    def pool(self):
        return {"cdf": self.cdf, "reward_mean": self.reward_mean}

    def to(self, device):
        self.cdf = self.cdf.to(device)
        self.reward_mean = self.reward_mean.to(device)
        self.noise = self.noise.to(device)

    def kernel_args(self, state):
        ints = [
            self.num_states,
            self.num_actions,
            int(self.start_state == "uniform"),
            int(self.obs_mode == "one_hot"),
            int(self.reward_std > 0),
        ]
        return [state["state"], self.cdf, self.reward_mean, self.noise], ints, []

    def ref_reset(self, S, P, i, task, rng):
        S.state[i] = rng_below(rng, self.num_states) if self.start_state == "uniform" else 0

    def ref_step(self, S, P, i, task, action, reward, rng):
        s, a = int(S.state[i]), int(action[0])
        r = np.float32(P.reward_mean[task, s, a])
        if self.reward_std > 0:
            r = np.float32(r + self._noise_np[rng & NOISE_MASK])
        reward[0] = r
        u = rng_unit(rng)
        # inverse CDF: the first j with u < cdf[j] (cdf[S-1] = 1 > u)
        S.state[i] = int(np.count_nonzero(P.cdf[task, s, a, : self.num_states - 1] <= u))
        return False

    def ref_observe(self, S, P, i, task, out, ctx):
        s = int(S.state[i])
        if self.obs_mode == "index":
            out[0] = s
        else:
            out[:] = 0.0
            out[s] = 1.0

    def single_observation_space(self):
        import gymnasium

        if self.obs_mode == "index":
            return gymnasium.spaces.Box(0.0, float(self.num_states - 1), shape=(1,), dtype=np.float32)
        return gymnasium.spaces.Box(0.0, 1.0, shape=(self.num_states,), dtype=np.float32)

    def render_rgb(self, S, P, i, task, cell: int = 16):
        """Top row: the S states, the current one blue. Below, one row per action: the reward mean
        R[s, a] of the task as grey levels (white = the task's best)."""
        n, A = self.num_states, self.num_actions
        img = np.full((A + 2, n, 3), 255, dtype=np.uint8)
        img[0] = (200, 200, 200)
        img[0, int(S.state[i])] = (30, 90, 220)
        R = np.asarray(P.reward_mean[task], dtype=np.float64)  # [S, A]
        span = max(float(R.max() - R.min()), 1e-9)
        img[2:] = (40 + 215 * (R.T - R.min()) / span).astype(np.uint8)[..., None]
        return np.repeat(np.repeat(img, cell, axis=0), cell, axis=1)

    # -- exact solutions ---------------------------------------------------------------------------

    def mdp(self, gamma: float = 0.99, tasks=None) -> oracle.TabularMDP:
        """The pool (or ``tasks`` of it) as a float64 ``metakern.oracle.TabularMDP`` with discount
        ``gamma``: the kernels' effective transitions, expected rewards and start distribution."""
        idx = self._task_index(tasks)
        P, R = self.transitions[idx], self.reward_means[idx]
        N, S = P.shape[0], self.num_states
        if self.start_state == "uniform":
            init = torch.full((N, S), 1.0 / S, dtype=torch.float64)
        else:
            init = torch.zeros((N, S), dtype=torch.float64)
            init[:, 0] = 1.0
        return oracle.TabularMDP(P.contiguous(), R.contiguous(), init, gamma=gamma)

    def _task_index(self, tasks) -> torch.Tensor:
        n = self.transitions.shape[0]
        if tasks is None:
            return torch.arange(n)
        idx = torch.as_tensor(tasks).reshape(-1).cpu()
        if idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise TypeError(f"tasks must be integer task ids, got dtype {idx.dtype}")
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
            raise ValueError(f"tasks must be non-empty ids in [0, {n})")
        return idx.long()

    def _check_policy(self, policy, N: int, horizon: int | None) -> torch.Tensor:
        pi = torch.as_tensor(policy).to(dtype=torch.float64, device="cpu")
        S, A = self.num_states, self.num_actions
        ok = pi.shape == (N, S, A) or (horizon is not None and pi.shape == (N, horizon, S, A))
        if not ok:
            want = f"({N}, {S}, {A})" + ("" if horizon is None else f" or ({N}, {horizon}, {S}, {A})")
            raise ValueError(f"policy must hold action probabilities of shape {want}, got {tuple(pi.shape)}")
        if not (
            torch.isfinite(pi).all()
            and (pi >= 0).all()
            and torch.allclose(pi.sum(-1), torch.ones((), dtype=torch.float64))
        ):
            raise ValueError("policy rows must be probability distributions over actions")
        return pi

    def finite_horizon(self, horizon: int, policy=None, *, gamma: float = 1.0, tasks=None) -> FiniteHorizonSolution:
        """Backward induction over ``horizon`` steps (undiscounted by default, as RL^2 scores
        episodes): optimal values / actions per (step, state), and the values of ``policy`` (action
        probabilities [N, S, A], or time-dependent [N, H, S, A]) when given."""
        H = _check_int("horizon", horizon)
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        mdp = self.mdp(0.0, tasks)
        P, R, init = mdp.P, mdp.R, mdp.init
        N, S, A = R.shape
        pi = None if policy is None else self._check_policy(policy, N, H)
        if pi is not None and pi.dim() == 3:
            pi = pi[:, None].expand(N, H, S, A)
        V = torch.zeros(N, H + 1, S, dtype=torch.float64)
        Q = torch.zeros(N, H, S, A, dtype=torch.float64)
        Vp = None if pi is None else torch.zeros(N, H + 1, S, dtype=torch.float64)
        Qp = None if pi is None else torch.zeros(N, H, S, A, dtype=torch.float64)
        for t in reversed(range(H)):
            Q[:, t] = R + gamma * torch.einsum("nsaj,nj->nsa", P, V[:, t + 1])
            V[:, t] = Q[:, t].max(-1).values
            if pi is not None:
                Qp[:, t] = R + gamma * torch.einsum("nsaj,nj->nsa", P, Vp[:, t + 1])
                Vp[:, t] = (pi[:, t] * Qp[:, t]).sum(-1)
        return FiniteHorizonSolution(
            V,
            Q,
            Q.argmax(-1),
            (init * V[:, 0]).sum(-1),
            Vp,
            Qp,
            None if Vp is None else (init * Vp[:, 0]).sum(-1),
        )

    def discounted(
        self, gamma: float, policy=None, *, tasks=None, tol: float = 1e-8, max_iter: int = 100_000
    ) -> DiscountedSolution:
        """Discounted infinite-horizon solution: V/Q of ``policy`` (action probabilities [N, S, A])
        by ``metakern.oracle.evaluate`` (one LU per task), and V*/Q*/an optimal policy by value
        iteration to ``tol`` followed by policy iteration (exact evaluation of the greedy policy
        until it is stable), all in float64."""
        if not 0.0 <= float(gamma) < 1.0:
            raise ValueError(f"gamma must lie in [0, 1) for a discounted problem, got {gamma}")
        mdp = self.mdp(float(gamma), tasks)
        N, S, A = mdp.R.shape
        V = torch.zeros(N, S, dtype=torch.float64)
        for _ in range(max_iter):
            Vn = (mdp.R + gamma * torch.einsum("nsaj,nj->nsa", mdp.P, V)).max(-1).values
            done = (Vn - V).abs().max() <= tol * (1 - gamma) if gamma > 0 else True
            V = Vn
            if done:
                break
        greedy = (mdp.R + gamma * torch.einsum("nsaj,nj->nsa", mdp.P, V)).argmax(-1)
        for _ in range(S * A + 1):
            ev = oracle.evaluate(mdp, self._deterministic_theta(greedy))
            better = ev.Q.argmax(-1)
            keep = ev.Q.gather(-1, better[..., None]) <= ev.Q.gather(-1, greedy[..., None]) + 1e-12
            better = torch.where(keep[..., 0], greedy, better)
            if torch.equal(better, greedy):
                break
            greedy = better
        Vp = Qp = vp = None
        if policy is not None:
            pi = self._check_policy(policy, N, None)
            evp = oracle.evaluate(mdp, pi.clamp_min(1e-300).log())
            Vp, Qp, vp = evp.V, evp.Q, evp.objective
        return DiscountedSolution(ev.V, ev.Q, greedy, ev.objective, Vp, Qp, vp)

    def _deterministic_theta(self, actions: torch.Tensor) -> torch.Tensor:
        """Logits whose softmax is one-hot on ``actions`` to within 1e-300."""
        theta = torch.full((*actions.shape, self.num_actions), -700.0, dtype=torch.float64)
        return theta.scatter_(-1, actions[..., None], 0.0)

    def exact(self, policy=None, *, gamma: float = 1.0, horizon: int | None = None, tasks=None):
        """``finite_horizon(horizon, policy, gamma=gamma)`` when ``horizon`` is given, else
        ``discounted(gamma, policy)`` (which needs gamma < 1)."""
        if horizon is not None:
            return self.finite_horizon(horizon, policy, gamma=gamma, tasks=tasks)
        return self.discounted(gamma, policy, tasks=tasks)


def TabularMDP(
    num_envs: int,
    *,
    num_states: int = 10,
    num_actions: int = 5,
    num_tasks: int = 1000,
    split: str = "train",
    task_seed: int = 0,
    start_state: str = "fixed",
    reward_std: float = 1.0,
    obs: str = "one_hot",
    max_steps: int | None = 10,
    episodes_per_trial: int = 10,
    **kwargs,
) -> BatchedEnv:
    """A batch of RL^2 tabular-MDP environments (functional API): episodes of ``max_steps`` = 10
    steps, trials of ``episodes_per_trial`` episodes in one MDP (RL^2 uses n in {10, 25, 50, 75,
    100}). The family (``env.family``) holds the pool and its exact solutions; other keyword
    arguments go to ``BatchedEnv``."""
    family = TabularMDPFamily(
        num_states,
        num_actions,
        num_tasks,
        split=split,
        task_seed=task_seed,
        start_state=start_state,
        reward_std=reward_std,
        obs=obs,
    )
    return BatchedEnv(family, num_envs, max_steps=max_steps, episodes_per_trial=episodes_per_trial, **kwargs)
