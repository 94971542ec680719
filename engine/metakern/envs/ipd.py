"""Iterated Prisoner's Dilemma (LOLA, LOLA-DiCE): two agents with memory-one observations.

Conventions (those of the LOLA-DiCE code the spec cites: alexis-jacq/LOLA_DiCE and
Theoretical-GMRL ``lola/envs/prisoners_dilemma.py``, ``true_objective``):

* ``actions[B, 2]``: column k is agent k's action in {0, 1}.
* Rewards ``[B, 2]``: agent k gets ``payoff[a_k, a_other]`` (row = its own action). The default
  payoff is the reference's ``[[-2, 0], [-3, -1]]``. Read as a prisoner's dilemma this makes
  **action 0 "defect" and action 1 "cooperate"** (mutual 0 pays -2 each, mutual 1 pays -1 each, and
  0 against 1 pays the temptation 0 against the sucker's -3); LOLA-DiCE's policy sigmoid(theta[s])
  is the probability of action 0 (it samples ``Bernoulli(1 - p)``). Pass ``payoff`` to change the
  game (e.g. ``[[-1, -3], [0, -2]]`` makes action 0 "cooperate").
* States: 0 = start, then 1 + 2 a_1 + a_2 = the previous joint action in agent 1's view, i.e.
  (0, 0), (0, 1), (1, 0), (1, 1) -> 1, 2, 3, 4. Agent 2 sees its own action first: the same id with
  2 and 3 swapped.
* Observation (float32): ``obs="one_hot"`` (default) gives [B, 2, 5], row k the one-hot of agent
  k's state (the reference's ``OneHot(5)`` per agent); ``obs="index"`` gives [B, 2], the ids.
* Episodes of ``max_steps`` = 100 steps (the rollout length of Liu et al. 2022; LOLA-DiCE's own
  script uses 150); the env never terminates. The driver's ``prev_action`` / ``prev_reward``
  record agent 1's action and reward only.
* The task pool is one payoff matrix (float32 [P, 2, 2]; several give game variants).

``ipd_exact_value`` is the exact discounted value of two memory-one policies (the reference's
``true_objective``), differentiable, in float64.

The compiled kernel is ``cpp/envs/ipd.h``; ``ref_*`` below is its readable reference.
"""

from __future__ import annotations

import numpy as np
import torch

from .core import BatchedEnv, Family, StateSpec

LOLA_PAYOFF = ((-2.0, 0.0), (-3.0, -1.0))
AGENT2_VIEW = (0, 1, 3, 2, 4)  # agent 1's state id -> agent 2's
OBS_MODES = ("one_hot", "index")


def _payoff_tensor(payoff, name: str = "payoff") -> torch.Tensor:
    if payoff is None:
        payoff = LOLA_PAYOFF
    p = torch.as_tensor(np.asarray(payoff.cpu() if isinstance(payoff, torch.Tensor) else payoff, dtype=np.float64))
    if p.shape == (2, 2):
        p = p[None]
    if p.dim() != 3 or tuple(p.shape[1:]) != (2, 2) or p.shape[0] < 1:
        raise ValueError(f"{name} must have shape (2, 2) or (P, 2, 2), got {tuple(p.shape)}")
    if not torch.isfinite(p.float()).all():
        raise ValueError(f"{name} must be finite (in float32)")
    return p


class IPDFamily(Family):
    """IPD rules with a pool of payoff matrices (see the module docstring)."""

    name = "ipd"
    num_actions = 2
    action_dim = 2
    reward_dim = 2
    obs_dtype = torch.float32

    def __init__(self, payoff=None, *, obs: str = "one_hot"):
        if obs not in OBS_MODES:
            raise ValueError(f"obs must be 'one_hot' or 'index', got {obs!r}")
        self.obs_mode = obs
        self.obs_shape = (2, 5) if obs == "one_hot" else (2,)
        self.payoff = _payoff_tensor(payoff).to(torch.float32).contiguous()

    def state_spec(self):
        return {"state": StateSpec((), torch.int32)}

    def pool(self):
        return {"payoff": self.payoff}

    def to(self, device):
        self.payoff = self.payoff.to(device)

    def kernel_args(self, state):
        return [state["state"], self.payoff], [int(self.obs_mode == "one_hot")], []

    def ref_reset(self, S, P, i, task, rng):
        S.state[i] = 0

    def ref_step(self, S, P, i, task, action, reward, rng):
        a1, a2 = int(action[0]), int(action[1])
        reward[0] = P.payoff[task, a1, a2]
        reward[1] = P.payoff[task, a2, a1]
        S.state[i] = 1 + 2 * a1 + a2
        return False

    def ref_observe(self, S, P, i, task, out, ctx):
        s1 = int(S.state[i])
        s2 = AGENT2_VIEW[s1]
        if self.obs_mode == "index":
            out[:] = (s1, s2)
        else:
            out[:] = 0.0
            out[0, s1] = 1.0
            out[1, s2] = 1.0

    def single_observation_space(self):
        import gymnasium

        if self.obs_mode == "index":
            return gymnasium.spaces.Box(0.0, 4.0, shape=(2,), dtype=np.float32)
        return gymnasium.spaces.Box(0.0, 1.0, shape=(2, 5), dtype=np.float32)

    def render_rgb(self, S, P, i, task, cell: int = 24):
        """The 2x2 payoff grid (row = agent 1's action, column = agent 2's) with the last joint
        action highlighted (blue); at the start state nothing is highlighted."""
        img = np.full((2, 2, 3), 225, dtype=np.uint8)
        pay = np.asarray(P.payoff[task], dtype=np.float64)
        total = pay + pay.T  # joint payoff of each cell
        span = max(float(total.max() - total.min()), 1e-9)
        img[...] = (60 + 180 * (total - total.min()) / span).astype(np.uint8)[..., None]
        s = int(S.state[i])
        if s > 0:
            img[(s - 1) // 2, (s - 1) % 2] = (30, 90, 220)
        return np.repeat(np.repeat(img, cell, axis=0), cell, axis=1)


def _joint(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Joint-action distribution over (0,0), (0,1), (1,0), (1,1) from P(action 0) of each agent."""
    return torch.stack((x * y, x * (1 - y), (1 - x) * y, (1 - x) * (1 - y)), dim=-1)


def ipd_exact_value(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    gamma: float = 0.96,
    *,
    payoff=None,
    horizon: int | None = None,
) -> torch.Tensor:
    """Exact expected discounted returns E[sum_t gamma^t r_t] of both agents, [..., 2] float64.

    theta1, theta2: [..., 5] memory-one logits, each agent indexed by its *own* view of the state;
    sigmoid(theta[s]) is the probability of action 0 in state s (LOLA-DiCE). As in LOLA-DiCE's
    ``true_objective``: agent 2's parameters are reindexed by [0, 1, 3, 2, 4] into agent 1's state
    view, P0 is the joint-action distribution at the start, P[s, s'] the joint-action (= next state)
    distribution in state s = 1..4, and V = P0 (I - gamma P)^-1 R with R the payoffs of the four
    joint actions; ``horizon`` = T gives the T-step value P0 (I - gamma P)^-1 (I - (gamma P)^T) R
    (what a rollout of T steps estimates). Differentiable in theta1 and theta2 (any order)."""
    for name, t in (("theta1", theta1), ("theta2", theta2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
        if t.dim() < 1 or t.shape[-1] != 5:
            raise ValueError(f"{name} must have shape [..., 5], got {tuple(t.shape)}")
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be a number in [0, 1), got {gamma!r}")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
        raise ValueError(f"horizon must be a positive int or None, got {horizon!r}")
    pay = _payoff_tensor(payoff)
    if pay.shape[0] != 1:
        raise ValueError("ipd_exact_value takes a single payoff matrix (2, 2)")
    dev = theta1.device
    pay = pay[0].to(dev)
    t1 = theta1.to(torch.float64)
    t2 = theta2.to(torch.float64)[..., list(AGENT2_VIEW)]
    t1, t2 = torch.broadcast_tensors(t1, t2)
    p1, p2 = torch.sigmoid(t1), torch.sigmoid(t2)
    P0 = _joint(p1[..., 0], p2[..., 0])  # [..., 4]
    P = _joint(p1[..., 1:], p2[..., 1:])  # [..., 4 states, 4 next states]
    R = torch.stack((pay.reshape(4), pay.T.reshape(4)), dim=-1)  # [4 joint actions, 2 agents]
    eye = torch.eye(4, dtype=torch.float64, device=dev)
    rhs = R.expand(*P.shape[:-2], 4, 2)
    if horizon is not None:
        rhs = rhs - torch.linalg.matrix_power(gamma * P, horizon) @ rhs
    W = torch.linalg.solve(eye - gamma * P, rhs)  # (I - gamma P)^-1 rhs
    return (P0[..., None, :] @ W)[..., 0, :]


def IPD(
    num_envs: int,
    *,
    payoff=None,
    obs: str = "one_hot",
    max_steps: int | None = 100,
    episodes_per_trial: int = 1,
    **kwargs,
) -> BatchedEnv:
    """A batch of iterated prisoner's dilemmas (functional API): ``actions`` [B, 2] in {0, 1},
    rewards [B, 2], observations [B, 2, 5] (one-hot per agent) or [B, 2] (ids), episodes of
    ``max_steps`` = 100 steps. ``payoff`` (2, 2) or a pool (P, 2, 2) of payoff matrices, default
    LOLA-DiCE's [[-2, 0], [-3, -1]]. Other keyword arguments go to ``BatchedEnv``."""
    return BatchedEnv(
        IPDFamily(payoff, obs=obs), num_envs, max_steps=max_steps, episodes_per_trial=episodes_per_trial, **kwargs
    )
