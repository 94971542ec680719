"""LOLA-DiCE on the iterated prisoner's dilemma, on-policy and off-policy DiCE, against the exact IPD value.

Agents: agent i has a memory-one Bernoulli policy with 5 logits theta_i (its own view of the state:
start, then the previous joint action), sigmoid(theta_i[s]) = P(action 0 = defect | s), action 1 =
cooperate (the conventions of ``metakern.envs.ipd``). J_i(theta_1, theta_2) = E[sum_t gamma^t r^i_t] over
rollouts of ``rollout_length`` steps.

LOLA (Foerster et al. 2018a) with K = ``lookaheads`` look-ahead steps: agent 1 models agent 2's learning

    theta_2^(0) = theta_2,   theta_2^(k+1) = theta_2^(k) + lr_in grad_{theta_2} J_2(theta_1, theta_2^(k))

(differentiable in theta_1: the step keeps its graph) and ascends its meta-gradient

    g_1 = d/d theta_1  J_1(theta_1, theta_2^(K)(theta_1)),

symmetrically for agent 2 (theta_1^(k) stepped on J_1(theta_1^(k), theta_2), ascend d/d theta_2 J_2(theta_1^(K),
theta_2)). Both agents update simultaneously from the same parameters with Adam (lr_out) on -g_i.
K = 0 gives naive learners: g_i = grad_{theta_i} J_i(theta_1, theta_2).

Estimators (``metakern.estimators`` fused ops, per trajectory, averaged over the batch; l_t = l^1_t + l^2_t
is the log-probability of **both** agents' actions at step t, c_t = sum_{k<=t} l_k, box(x) = exp(x - stop(x))):

* DiCE (Foerster et al. 2018b): J^ = sum_t box(c_t) gamma^t r_t  (``dice``). Its first and second
  derivatives are unbiased, so differentiating the inner step through it gives LOLA's cross term.
* Mao et al.'s baseline (``baseline=True``): + sum_t (1 - box(l_t)) gamma^t V(s_t)  (``dice_baseline``).
  V is a 5-entry table per agent, trained with Adam (lr_v) on mean_t (r_t - V(s_t))^2: it regresses the
  **immediate** reward, not the return -- a quirk of the PyTorch reference implementations (LOLA_DiCE,
  torchopt's LOLA example, Theoretical-GMRL ``lola/*``) kept for fidelity; any V(s_t) leaves the estimator
  unbiased, only the variance reduction suffers.
* Off-policy DiCE (Liu et al. 2022; ``off_policy=True``) for the inner (look-ahead) steps: a replay buffer
  of ``buffer_size`` trajectories (filled at the start from the initial policies, then each look-ahead adds
  the 2 x ``batch_size`` fresh trajectories it sampled, replacing the oldest) with the behaviour
  log-probabilities l^mu stored beside them; J^ = sum_t exp(c_t - stop(c^mu_t)) gamma^t r_t with log-space
  weights (``off_policy_dice``, exponent clamped at 30) and baseline sum_t (1 - exp(l_t - stop(l^mu_t)))
  gamma^t V(s_t). The outer objective stays on-policy DiCE, as in the reference code
  (``lola/lola_dice_off_policy.py``).

Sampling (per update, as in the reference): each look-ahead step samples ``batch_size`` fresh
trajectories for agent 1's model of agent 2 (policies theta_1, theta_2^(k)) and ``batch_size`` for agent 2's
model of agent 1 (theta_1^(k), theta_2); the outer step samples ``batch_size`` under (theta_1, theta_2^(K)) for
agent 1 and ``batch_size`` under (theta_1^(K), theta_2) for agent 2. Each group is one rollout of a
2 x ``batch_size`` metakern ``IPD`` BatchedEnv with per-row policies; log-probs are recomputed by plain
torch from theta (log sigmoid(+-theta[s])), so they are differentiable to any order.

Exact oracle (``exact_lola_gradients``): the same look-ahead with ``ipd_exact_value`` (the T-step value,
T = ``rollout_length``: the quantity the rollouts estimate) as J_1, J_2 and autograd through the
look-ahead. The metric ``cos1`` is the cosine between agent 1's estimated meta-gradient (the one the update
used) and this exact one at the same parameters.

Metrics (metrics.csv, one row per iteration i): ``value1``, ``value2`` = (1 - gamma) V_i(theta_1, theta_2)
after update i (the exact infinite-horizon value, normalised to an average per-step reward as the papers
plot it: -1 = mutual cooperation, -2 = mutual defection); ``reward1``, ``reward2`` = the mean per-step reward
of update i's first rollout, sampled from the pre-update policies; ``p_coop{1,2}_s{0..4}`` = P(cooperate)
in each of the agent's own states after update i; ``cos1``, ``cos2`` every ``eval_every`` iterations (NaN
otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..envs.core import rng_key
from ..envs.ipd import IPD, ipd_exact_value
from ..estimators import dice, dice_baseline, off_policy_dice
from .run import Progress, Run, check_bools

ENVS = ("ipd",)
NUM_STATES = 5
START, CC = 0, 4  # state ids: the start, and "both cooperated last step" (the same id in both views)
STREAM_ITER, STREAM_FILL = 11, 12
DTYPE = torch.float64


@dataclass
class LolaConfig:
    """LOLA-DiCE settings; the defaults are Liu et al. 2022's IPD settings (Theoretical-GMRL ``lola/argument.py``).

    ``lookaheads`` = 0 gives naive learners; ``off_policy`` runs the look-ahead steps on off-policy DiCE
    over a ``buffer_size``-trajectory replay buffer; ``checkpoint_every`` = 0 checkpoints only at the end;
    ``eval_every`` = 0 never computes the exact meta-gradient cosine (else at iterations 0, e, 2e, ... and
    the last)."""

    env: str = "ipd"
    seed: int = 0
    iterations: int = 500
    gamma: float = 0.96
    rollout_length: int = 100
    batch_size: int = 128
    lr_in: float = 0.3
    lr_out: float = 0.1
    lr_v: float = 0.1
    lookaheads: int = 1
    off_policy: bool = False
    buffer_size: int = 1024
    baseline: bool = True
    checkpoint_every: int = 50
    eval_every: int = 10
    device: str = "cpu"

    def __post_init__(self) -> None:
        validate_config(self)


CONFIG = LolaConfig


def _int(cfg: LolaConfig, name: str, low: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an int, got {v!r}")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")


def _float(cfg: LolaConfig, name: str, *, positive: bool = False) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    if v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {v}")


def validate_config(cfg: LolaConfig) -> None:
    """Raise ValueError naming the first bad field."""
    if cfg.env not in ENVS:
        raise ValueError(f"env must be one of {ENVS}, got {cfg.env!r}")
    _int(cfg, "seed", 0)
    _int(cfg, "iterations", 1)
    _int(cfg, "rollout_length", 1)
    _int(cfg, "batch_size", 1)
    _int(cfg, "lookaheads", 0)
    _int(cfg, "buffer_size", 1)
    _int(cfg, "checkpoint_every", 0)
    _int(cfg, "eval_every", 0)
    g = cfg.gamma
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.0 <= g < 1.0:
        raise ValueError(f"gamma must be a number in [0, 1), got {g!r}")
    _float(cfg, "lr_in")
    _float(cfg, "lr_out", positive=True)
    _float(cfg, "lr_v")
    check_bools(cfg, ("off_policy", "baseline"))
    if cfg.off_policy and cfg.lookaheads == 0:
        raise ValueError("off_policy needs lookaheads >= 1 (the replay buffer serves the look-ahead steps only)")
    if cfg.off_policy and cfg.buffer_size < 2 * cfg.batch_size:
        raise ValueError(
            f"buffer_size must be >= 2 * batch_size = {2 * cfg.batch_size} with off_policy (each look-ahead adds "
            f"that many trajectories), got {cfg.buffer_size}"
        )
    if not isinstance(cfg.device, str):
        raise ValueError(f"device must be a string, got {cfg.device!r}")
    try:
        torch.device(cfg.device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"device: {cfg.device!r} is not a torch device ({e})") from None


# ----------------------------------------------------------------------------------------------
# Policies, rollouts, objectives


def log_prob(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi_theta(a | s) of the memory-one Bernoulli policy: log sigmoid(theta[s]) for a = 0 (defect),
    log sigmoid(-theta[s]) for a = 1 (differentiable, any order). theta [5] with states/actions integer
    [...], or one parameter row per trajectory, theta [N, 5] with states/actions [N, T]."""
    sign = 1.0 - 2.0 * actions.to(theta.dtype)
    logits = theta[states.long()] if theta.dim() == 1 else theta.gather(1, states.long())
    return F.logsigmoid(sign * logits)


def p_cooperate(theta: torch.Tensor) -> torch.Tensor:
    """P(action 1 = cooperate | s) = sigmoid(-theta[s]) for the 5 states of the agent's own view."""
    return torch.sigmoid(-theta)


def _generator(device: torch.device, seed: int, iteration: int, stream: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(rng_key(seed, 0, iteration, stream) & ((1 << 63) - 1))
    return g


def rollout(env, theta1: torch.Tensor, theta2: torch.Tensor, length: int, gen: torch.Generator) -> dict:
    """Play ``length`` steps in every row of ``env`` (a metakern IPD BatchedEnv, obs="index"), row b with
    the policies theta1[b], theta2[b] ([N, 5], detached). Returns states [N, T, 2] (each agent's own view),
    actions [N, T, 2], rewards [N, T, 2] (float64) and the behaviour log-probs blogp [N, T, 2]."""
    N = env.num_envs
    p0 = torch.stack((torch.sigmoid(theta1), torch.sigmoid(theta2)), dim=1).to(DTYPE)  # [N, 2, 5] P(action 0)
    states = torch.empty((N, length, 2), dtype=torch.long, device=env.device)
    actions = torch.empty((N, length, 2), dtype=torch.int32, device=env.device)
    rewards = torch.empty((N, length, 2), dtype=torch.float32, device=env.device)
    s = env.reset().long()  # [N, 2]
    for t in range(length):
        p = p0.gather(2, s[:, :, None])[:, :, 0]
        u = torch.rand((N, 2), generator=gen, device=env.device, dtype=DTYPE)
        a = (u >= p).to(torch.int32)  # 0 (defect) with probability p
        states[:, t] = s
        actions[:, t] = a
        obs, r, *_ = env.step(a)
        rewards[:, t] = r
        s = obs.long()
    blogp = torch.stack(
        (
            log_prob(theta1.to(DTYPE), states[..., 0], actions[..., 0]),
            log_prob(theta2.to(DTYPE), states[..., 1], actions[..., 1]),
        ),
        dim=-1,
    )
    return {"states": states, "actions": actions, "rewards": rewards.to(DTYPE), "blogp": blogp}


def _rows(data: dict, sl: slice) -> dict:
    return {k: v[sl] for k, v in data.items()}


def dice_objective(
    data: dict,
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    agent: int,
    values: torch.Tensor | None,
    gamma: float,
    *,
    off_policy: bool = False,
) -> torch.Tensor:
    """Agent ``agent``'s (0 or 1) DiCE estimate of J on ``data`` with both agents' log-probs recomputed at
    (theta1, theta2): on-policy ``dice`` / ``dice_baseline``, or off-policy DiCE against the stored behaviour
    log-probs (module docstring). ``values`` (the agent's 5-entry table) adds the baseline; None omits it."""
    states, actions = data["states"], data["actions"]
    logp = log_prob(theta1, states[..., 0], actions[..., 0]) + log_prob(theta2, states[..., 1], actions[..., 1])
    rewards = data["rewards"][..., agent]
    v = None if values is None else values.detach().to(DTYPE)[states[..., agent]]
    if not off_policy:
        if v is None:
            return dice(logp, rewards, gamma)
        return dice_baseline(logp, rewards, v, gamma)
    behaviour = data["blogp"].sum(-1)
    J = off_policy_dice(logp, behaviour, rewards, gamma)
    if v is not None:
        disc = gamma ** torch.arange(logp.shape[1], device=logp.device, dtype=DTYPE)
        J = J + ((1 - torch.exp(logp - behaviour)) * disc * v).sum(1).mean()
    return J


class ReplayBuffer:
    """A ring of ``size`` trajectories (states, actions, rewards, behaviour log-probs), oldest replaced first."""

    def __init__(self, size: int, length: int, device: torch.device):
        self.size, self.count, self.ptr = size, 0, 0
        self.data = {
            "states": torch.zeros((size, length, 2), dtype=torch.long, device=device),
            "actions": torch.zeros((size, length, 2), dtype=torch.int32, device=device),
            "rewards": torch.zeros((size, length, 2), dtype=DTYPE, device=device),
            "blogp": torch.zeros((size, length, 2), dtype=DTYPE, device=device),
        }

    def add(self, batch: dict) -> None:
        n = batch["states"].shape[0]
        if n > self.size:
            batch, n = _rows(batch, slice(n - self.size, n)), self.size
        idx = (self.ptr + torch.arange(n, device=self.data["states"].device)) % self.size
        for k, v in batch.items():
            self.data[k][idx] = v
        self.ptr = (self.ptr + n) % self.size
        self.count = min(self.size, self.count + n)

    def contents(self) -> dict:
        return self.data if self.count == self.size else _rows(self.data, slice(0, self.count))

    def state_dict(self) -> dict:
        small = {
            "states": self.data["states"].to(torch.uint8),
            "actions": self.data["actions"].to(torch.uint8),
            "rewards": self.data["rewards"],
            "blogp": self.data["blogp"],
        }
        return {"count": self.count, "ptr": self.ptr, "data": {k: v.cpu() for k, v in small.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.ptr = int(state["count"]), int(state["ptr"])
        for k, v in state["data"].items():
            self.data[k].copy_(v.to(self.data[k].dtype))


# ----------------------------------------------------------------------------------------------
# The exact oracle


def exact_lola_gradients(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    *,
    lr_in: float,
    lookaheads: int,
    gamma: float,
    horizon: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both agents' exact LOLA meta-gradients (g_1, g_2) in float64: the look-ahead of the module docstring
    with J_i = ``ipd_exact_value(..., gamma, horizon=horizon)[i]`` and autograd through the K steps
    (create_graph); K = 0 gives the naive gradients grad_{theta_i} J_i."""
    t1 = theta1.detach().to(DTYPE).requires_grad_(True)
    t2 = theta2.detach().to(DTYPE).requires_grad_(True)
    m1 = t1.detach().requires_grad_(True)  # agent 2's model of agent 1
    m2 = t2.detach().requires_grad_(True)  # agent 1's model of agent 2
    with torch.enable_grad():
        for _ in range(lookaheads):
            j2 = ipd_exact_value(t1, m2, gamma, horizon=horizon)[1]
            j1 = ipd_exact_value(m1, t2, gamma, horizon=horizon)[0]
            g2 = torch.autograd.grad(j2, m2, create_graph=True)[0]
            g1 = torch.autograd.grad(j1, m1, create_graph=True)[0]
            m2, m1 = m2 + lr_in * g2, m1 + lr_in * g1
        outer = ipd_exact_value(t1, m2, gamma, horizon=horizon)[0] + ipd_exact_value(m1, t2, gamma, horizon=horizon)[1]
        g1, g2 = torch.autograd.grad(outer, (t1, t2))
    return g1, g2


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """x . y / (|x| |y|) in float64 (NaN if either is zero)."""
    x, y = x.detach().to(DTYPE).flatten(), y.detach().to(DTYPE).flatten()
    den = float(x.norm() * y.norm())
    return float(x @ y) / den if den > 0 else math.nan


# ----------------------------------------------------------------------------------------------
# Training


class _Learner:
    """Both agents' parameters, value tables, optimisers, replay buffer and rollout envs."""

    def __init__(self, cfg: LolaConfig):
        self.cfg = cfg
        self.device = dev = torch.device(cfg.device)
        self.theta = [torch.zeros(NUM_STATES, dtype=DTYPE, device=dev, requires_grad=True) for _ in range(2)]
        self.values = [torch.zeros(NUM_STATES, dtype=DTYPE, device=dev, requires_grad=True) for _ in range(2)]
        self.opt = torch.optim.Adam(self.theta, lr=cfg.lr_out)
        self.vopt = torch.optim.Adam(self.values, lr=cfg.lr_v)
        self.buffer = ReplayBuffer(cfg.buffer_size, cfg.rollout_length, dev) if cfg.off_policy else None
        self._envs: dict[int, Any] = {}

    def env(self, n: int):
        if n not in self._envs:
            self._envs[n] = IPD(n, obs="index", max_steps=self.cfg.rollout_length, device=self.device)
        return self._envs[n]

    def state_dict(self, iteration: int) -> dict:
        return {
            "iteration": iteration,
            "theta": torch.stack([t.detach() for t in self.theta]).cpu(),
            "values": torch.stack([v.detach() for v in self.values]).cpu(),
            "opt": self.opt.state_dict(),
            "vopt": self.vopt.state_dict(),
            "buffer": None if self.buffer is None else self.buffer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for i in range(2):
                self.theta[i].copy_(state["theta"][i])
                self.values[i].copy_(state["values"][i])
        self.opt.load_state_dict(state["opt"])
        self.vopt.load_state_dict(state["vopt"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["buffer"])

    def _sample(self, pairs, gen) -> dict:
        """One rollout of len(pairs) x batch_size rows; group j plays the (theta1, theta2) pairs[j]."""
        B = self.cfg.batch_size
        th1 = torch.cat([a.detach().expand(B, NUM_STATES) for a, _ in pairs])
        th2 = torch.cat([b.detach().expand(B, NUM_STATES) for _, b in pairs])
        return rollout(self.env(len(pairs) * B), th1, th2, self.cfg.rollout_length, gen)

    def fill_buffer(self, iteration: int) -> None:
        """The reference's ``fill_replay``: ``buffer_size`` trajectories of the current policies."""
        cfg = self.cfg
        gen = _generator(self.device, cfg.seed, iteration, STREAM_FILL)
        th = [t.detach().expand(cfg.buffer_size, NUM_STATES) for t in self.theta]
        self.buffer.add(rollout(self.env(cfg.buffer_size), th[0], th[1], cfg.rollout_length, gen))

    def meta_gradients(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, dict, tuple[dict, dict]]:
        """Both agents' estimated LOLA-DiCE meta-gradients (g_1, g_2) at the current parameters (module
        docstring), with the first rollout of the update and the outer rollouts (agent 1's, agent 2's).
        Samples with update ``iteration``'s random stream; adds to the replay buffer when off-policy."""
        cfg, B = self.cfg, self.cfg.batch_size
        gen = _generator(self.device, cfg.seed, iteration, STREAM_ITER)
        t1, t2 = self.theta
        V1, V2 = (v.detach() if cfg.baseline else None for v in self.values)
        first = None
        m1 = t1.detach().requires_grad_(True)  # agent 2's model of agent 1
        m2 = t2.detach().requires_grad_(True)  # agent 1's model of agent 2
        for _ in range(cfg.lookaheads):
            fresh = self._sample([(t1, m2), (m1, t2)], gen)
            first = first if first is not None else fresh
            if cfg.off_policy:
                self.buffer.add(fresh)
                d2 = d1 = self.buffer.contents()
            else:
                d2, d1 = _rows(fresh, slice(0, B)), _rows(fresh, slice(B, 2 * B))
            j2 = dice_objective(d2, t1, m2, 1, V2, cfg.gamma, off_policy=cfg.off_policy)
            j1 = dice_objective(d1, m1, t2, 0, V1, cfg.gamma, off_policy=cfg.off_policy)
            g2 = torch.autograd.grad(j2, m2, create_graph=True)[0]
            g1 = torch.autograd.grad(j1, m1, create_graph=True)[0]
            m2, m1 = m2 + cfg.lr_in * g2, m1 + cfg.lr_in * g1
        outer = self._sample([(t1, m2), (m1, t2)], gen)
        first = first if first is not None else outer
        o1, o2 = _rows(outer, slice(0, B)), _rows(outer, slice(B, 2 * B))
        J1 = dice_objective(o1, t1, m2, 0, V1, cfg.gamma)
        J2 = dice_objective(o2, m1, t2, 1, V2, cfg.gamma)
        g1, g2 = torch.autograd.grad(J1 + J2, (t1, t2))
        return g1, g2, first, (o1, o2)

    def update(self, iteration: int, want_exact: bool) -> dict:
        """One simultaneous LOLA-DiCE update of both agents (module docstring); returns the metrics."""
        cfg = self.cfg
        t1, t2 = self.theta
        g1, g2, first, (o1, o2) = self.meta_gradients(iteration)
        row: dict[str, float] = {}
        if want_exact:
            e1, e2 = exact_lola_gradients(
                t1, t2, lr_in=cfg.lr_in, lookaheads=cfg.lookaheads, gamma=cfg.gamma, horizon=cfg.rollout_length
            )
            row["cos1"], row["cos2"] = cosine(g1, e1), cosine(g2, e2)
        else:
            row["cos1"] = row["cos2"] = math.nan
        # ascend J: Adam minimises -J
        self.opt.zero_grad(set_to_none=True)
        t1.grad, t2.grad = -g1, -g2
        self.opt.step()
        # value tables regress the immediate reward (the reference's quirk, module docstring)
        self.vopt.zero_grad(set_to_none=True)
        loss = sum(
            ((d["rewards"][..., i] - self.values[i][d["states"][..., i]]) ** 2).mean() for i, d in enumerate((o1, o2))
        )
        loss.backward()
        self.vopt.step()
        row["reward1"] = float(first["rewards"][..., 0].mean())
        row["reward2"] = float(first["rewards"][..., 1].mean())
        return row


def evaluate(config: LolaConfig, state: dict) -> dict:
    """Exact per-step values (1 - gamma) V_i, P(cooperate) per state and ``mutual_cooperation`` (both agents
    cooperate with probability > 0.5 at the start and after mutual cooperation) of a checkpoint ``state``."""
    theta = state["theta"].to(DTYPE)
    v = ipd_exact_value(theta[0], theta[1], config.gamma) * (1 - config.gamma)
    pc = [p_cooperate(theta[i]) for i in range(2)]
    mutual = all(bool(p[START] > 0.5) and bool(p[CC] > 0.5) for p in pc)
    return {
        "value1": float(v[0]),
        "value2": float(v[1]),
        "p_coop1": [round(float(x), 6) for x in pc[0]],
        "p_coop2": [round(float(x), 6) for x in pc[1]],
        "mutual_cooperation": mutual,
    }


def _row(iteration: int, state: dict, cfg: LolaConfig, extra: dict) -> dict:
    ev = evaluate(cfg, state)
    row = {"iteration": iteration, "value1": ev["value1"], "value2": ev["value2"]}
    row.update(reward1=extra["reward1"], reward2=extra["reward2"])
    for i in (1, 2):
        for s, p in enumerate(ev[f"p_coop{i}"]):
            row[f"p_coop{i}_s{s}"] = p
    row.update(cos1=extra["cos1"], cos2=extra["cos2"])
    return row


def train(config: LolaConfig, run_dir, *, resume: bool = False, progress: bool = True) -> dict:
    """Train both LOLA-DiCE agents for ``config.iterations`` updates in the run folder ``run_dir``
    (``metakern.algos.run.Run``); ``resume`` continues from its checkpoint, reproducing the uninterrupted run
    exactly (every update's randomness is seeded from (seed, iteration)). Returns the final ``evaluate``
    summary plus ``iterations``, ``cos1_mean`` / ``cos2_mean`` (over the evaluated iterations) and ``run_dir``."""
    validate_config(config)
    run = Run(run_dir, config, resume=resume)
    try:
        learner = _Learner(config)
        if run.state is not None:
            learner.load_state_dict(run.state)
        elif learner.buffer is not None:
            learner.fill_buffer(0)
        n = config.iterations
        bar = Progress(n, f"lola seed {config.seed}", start=run.start, enabled=progress)
        for it in range(run.start, n):
            e = config.eval_every
            want_exact = e > 0 and (it % e == 0 or it == n - 1)
            extra = learner.update(it, want_exact)
            state = learner.state_dict(it + 1)
            row = _row(it, state, config, extra)
            run.log(row)
            bar.update(it + 1, v1=row["value1"], v2=row["value2"])
            c = config.checkpoint_every
            if it == n - 1 or (c > 0 and (it + 1) % c == 0):
                run.save(state)
        final = learner.state_dict(n)
        run.plot(
            [
                ["value1", "value2", "reward1", "reward2"],
                ["p_coop1_s0", "p_coop1_s4", "p_coop2_s0", "p_coop2_s4"],
                ["cos1", "cos2"],
            ],
            title=f"LOLA-DiCE IPD (lookaheads={config.lookaheads}, off_policy={config.off_policy}, seed={config.seed})",
        )
        rows = run.metrics()
    finally:
        run.close()
    summary = evaluate(config, final)
    for k in ("cos1", "cos2"):
        vals = [r[k] for r in rows if math.isfinite(r[k])]
        summary[f"{k}_mean"] = sum(vals) / len(vals) if vals else math.nan
    summary.update(iterations=config.iterations, run_dir=str(Path(run_dir)))
    return summary
