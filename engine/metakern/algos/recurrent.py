"""Memory-based meta-RL: recurrent actor-critics trained by PPO or A2C with truncated BPTT over trials.

The shared machinery of RL2 (``rl2.py``, Duan et al. 2016), E-RL2 (``erl2.py``, Stadie et al. 2018)
and MetODS (``metods.py``, Chalvidal et al. 2022). An agent plays *trials*: several episodes of one
task, its memory (a GRU hidden state, or MetODS' synaptic matrix W) carried across the episodes of
a trial and reset where a new trial (a new task) starts. Per step it sees

    x_t = [obs_t (flattened), new_episode_t]  and  onehot(a_{t-1}), r_{t-1}

(``prev_action``/``prev_reward`` from the env's trial bookkeeping: -1 / 0 at a trial's start), the
RL2 input [o, a, r, d] of Duan et al.

Training (one iteration): the B envs (``BatchedEnv``, C++ kernel) step ``rollout_steps`` (T) times
under the current policy (one policy call per step, no gradient); the rollout is kept as [B, T]
tensors with the memory state at its start. Advantages are GAE over the trial (metakern's
``gae`` scan: a trial's end is terminal, episode ends inside a trial are not: the objective is the
trial's total reward). The update re-runs the policy over the whole [B, T] windows from their
stored starting states (truncated BPTT: gradients stop at the window's start, the state itself is
carried on), in ``minibatches`` groups of envs for ``epochs`` epochs:

* ``update="ppo"``: clipped surrogate (clip 0.2), value loss, entropy bonus, Adam, grad-norm clip;
* ``update="a2c"``: one gradient step per rollout on -logpi A + value loss - entropy.

E-RL2: rewards of exploratory episodes (the first ``explore_episodes`` of each trial) are zeroed in
the objective (the returns and advantages), but the agent still receives them as ``r_{t-1}``
(Stadie et al., Sec. 3.4, Eq. 8). Their Eq. 8 prints the discount as gamma^j (absolute time); here
it is the usual gamma^(j-i).

Agents: ``GRUPolicy`` (RL2, E-RL2) and ``metakern.metods.MetODSPolicy`` (the fused synapse op: one
``metods_step`` per acting step, one ``metods_synapse`` call per training window).

Environments (``env``):

===========  ======================================================================  ==============
env          tasks and trials                                                        evaluation
===========  ======================================================================  ==============
krazyworld   Krazy World, E-MAML settings (3x3 one-hot patch, <= 100-step episodes),  E-RL2 protocol
             trials of 5 episodes; training draws trials from a pool of
             ``krazy_train_tasks`` tasks, evaluation uses the 64 E-MAML test tasks;
             tile ids the same in every task unless ``krazy_permute_ids``
maze         ``maze_variant="emaml"``: E-MAML mazes (size ``maze_size``), trials of 5  E-RL2 protocol
             episodes, training / test maze pools
             ``maze_variant="metods"``: MetODS' maze (goal reward 10, re-placed at a   MetODS maze
             random square after each reward, 100-step episodes), one episode per      metrics, also
             trial                                                                    on a larger maze
harlow       the MetODS Harlow task: 5 presentations of 2 objects per episode, one     return, first
             episode per trial                                                        and later choices
===========  ======================================================================  ==============

Evaluation (every ``eval_every`` iterations, on held-out tasks, sampled actions, one trial per
env, ``eval_trials`` trials):

* E-RL2 protocol (Stadie et al., App. C): 5-episode trials, the first 3 exploratory; reported:
  ``eval_return`` = mean return of episodes 4 and 5, ``eval_explore_return`` = of episodes 1-3.
* MetODS maze metrics (Chalvidal et al., Sec. 5): ``eval_first_reward_step`` (steps to the first
  reward, 100 = the episode length when none), ``eval_success`` (fraction of episodes with a
  reward), ``eval_cum_reward`` (episode return); the same on a larger unseen maze of side
  ``eval_large_maze`` (``eval_large_*``).
* Harlow: ``eval_return`` (episode return), ``eval_first_choice`` (mean reward of the first
  presentation, ~0 for any agent) and ``eval_later_choices`` (mean reward of presentations 2..5:
  1 = one-shot learning, 0 = chance).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from .. import envs
from ..returns import gae
from .rollout import krazy_split
from .run import Progress, Run, check_bools, check_ints, check_reals

ENVS = ("krazyworld", "maze", "harlow")
UPDATES = ("ppo", "a2c")
MAZE_VARIANTS = ("emaml", "metods")


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


# --------------------------------------------------------------------------------------------------
# Config


@dataclass
class RecurrentConfig:
    """Settings shared by ``rl2``, ``erl2`` and ``metods`` (module docstring). Stadie et al. give no
    hyper-parameter table for RL2 / E-RL2; these are common recurrent-PPO values sized for a 2-core
    CPU (hidden 64, 256 envs, 100-step windows)."""

    AGENT: ClassVar[str] = "gru"

    env: str = "krazyworld"
    seed: int = 0
    iterations: int = 200
    num_envs: int = 256
    rollout_steps: int = 100
    update: str = "ppo"
    lr: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    epochs: int = 4
    minibatches: int = 4
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5
    hidden: int = 64
    episodes_per_trial: int = 5
    explore_episodes: int = 0
    maze_size: int = 10
    maze_variant: str = "emaml"
    krazy_train_tasks: int = 1024
    krazy_permute_ids: bool = False
    eval_every: int = 10
    eval_trials: int = 64
    eval_large_maze: int = 14
    checkpoint_every: int = 10
    device: str = "cpu"

    def validate(self) -> RecurrentConfig:
        if self.env not in ENVS:
            raise ValueError(f"env must be one of {ENVS}, got {self.env!r}")
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {self.update!r}")
        if self.maze_variant not in MAZE_VARIANTS:
            raise ValueError(f"maze_variant must be one of {MAZE_VARIANTS}, got {self.maze_variant!r}")
        check_ints(self, ("iterations", "num_envs", "rollout_steps", "epochs", "minibatches", "hidden",
                          "episodes_per_trial", "eval_every", "eval_trials", "checkpoint_every",
                          "krazy_train_tasks"))  # fmt: skip
        check_ints(self, ("maze_size", "eval_large_maze"), low=5)
        check_bools(self, ("krazy_permute_ids",))
        check_ints(self, ("explore_episodes",), low=0)
        if not self.explore_episodes < self.episodes_per_trial:
            raise ValueError(
                f"explore_episodes must be in [0, episodes_per_trial={self.episodes_per_trial}), "
                f"got {self.explore_episodes}"
            )
        if self.minibatches > self.num_envs:
            raise ValueError(f"minibatches ({self.minibatches}) must be at most num_envs ({self.num_envs})")
        check_reals(self, (("lr", 0.0, math.inf), ("gamma", 0.0, 1.0), ("gae_lambda", 0.0, 1.0),
                           ("clip", 0.0, math.inf), ("value_coef", 0.0, math.inf),
                           ("entropy_coef", 0.0, math.inf), ("max_grad_norm", 0.0, math.inf)))  # fmt: skip
        return self

    def trial_episodes(self) -> int:
        """Episodes per trial in training: 1 for one-episode tasks (Harlow, MetODS maze)."""
        return 1 if self.single_episode_trials() else self.episodes_per_trial

    def single_episode_trials(self) -> bool:
        return self.env == "harlow" or (self.env == "maze" and self.maze_variant == "metods")


# --------------------------------------------------------------------------------------------------
# Environments


def make_env(cfg: RecurrentConfig, split: str, num_envs: int, *, seed: int, maze_size: int | None = None):
    """The training (``split="train"``: trials draw tasks from the training pool) or evaluation
    (``"test"``: tasks held until ``set_tasks``) envs of ``cfg.env``. Evaluation trials follow the
    E-RL2 protocol (5 episodes, the first 3 exploratory) except on one-episode tasks."""
    train = split == "train"
    if cfg.single_episode_trials():
        episodes, explore = 1, 0
    else:
        episodes, explore = (cfg.episodes_per_trial, cfg.explore_episodes) if train else (5, 3)
    # same_step autoreset: the step that ends an episode returns the next episode's first
    # observation, so a trial is an unbroken stream of real steps for the recurrent agent
    common = dict(episodes_per_trial=episodes, explore_episodes=explore, resample_tasks=train, seed=seed,
                  device=cfg.device, autoreset_mode="same_step")  # fmt: skip
    if cfg.env == "krazyworld":
        tasks = krazy_split("train" if train else "test", cfg.krazy_train_tasks)
        return envs.KrazyWorld(num_envs, obs_view="patch", obs_mode="onehot", max_steps=100,
                               permute_colors=cfg.krazy_permute_ids, **tasks, **common)  # fmt: skip
    if cfg.env == "maze":
        size = cfg.maze_size if maze_size is None else maze_size
        n = 1000 if train else 64
        return envs.Maze(num_envs, size=size, split=split, num_mazes=n, variant=cfg.maze_variant, **common)
    return envs.Harlow(num_envs, split=split, **common)


class Inputs(NamedTuple):
    """One step's agent inputs for B envs: x [B, D] float, prev_action [B] int64 (-1: none),
    prev_reward [B] float, reset [B] bool (memory returns to its initial value before this step)."""

    x: torch.Tensor
    prev_action: torch.Tensor
    prev_reward: torch.Tensor
    reset: torch.Tensor


def observe(env: envs.BatchedEnv, obs: torch.Tensor, reset: torch.Tensor) -> Inputs:
    """The agent's inputs from the env's current observation and trial bookkeeping (copies: the
    env updates its bookkeeping tensors in place)."""
    B = obs.shape[0]
    x = torch.cat((obs.reshape(B, -1).float(), env.new_episode.float().unsqueeze(1)), dim=1)
    return Inputs(x, env.prev_action.long(), env.prev_reward.clone(), reset)


def input_size(env: envs.BatchedEnv) -> int:
    return math.prod(env.obs_shape) + 1


# --------------------------------------------------------------------------------------------------
# The GRU agent (RL2)


class AgentOutput(NamedTuple):
    logits: torch.Tensor
    value: torch.Tensor
    state: torch.Tensor


class GRUPolicy(nn.Module):
    """RL2's recurrent actor-critic: h_t = GRU([x_t, onehot(a_{t-1}), r_{t-1}], h_{t-1}), with
    h = 0 where a trial starts; logits and value are linear read-outs of h_t.

    ``forward`` takes one step ([B, ...] inputs, state h [B, H]); ``forward_sequence`` a window
    ([B, T, ...]) from a given state, with resets inside it: its input projections for all T steps
    are one matrix product, then the recurrence runs step by step (the GRU of
    ``torch.nn.GRUCell``, whose parameters it holds: ``forward_sequence`` equals T ``GRUCell`` calls)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int = 64):
        super().__init__()
        self.obs_dim, self.num_actions, self.hidden = obs_dim, num_actions, hidden
        self.cell = nn.GRUCell(obs_dim + num_actions + 1, hidden)
        self.policy_head = nn.Linear(hidden, num_actions)
        self.value_head = nn.Linear(hidden, 1)

    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden, device=device or self.cell.weight_hh.device)

    def _inputs(self, x, prev_action, prev_reward) -> torch.Tensor:
        onehot = (prev_action.unsqueeze(-1) == torch.arange(self.num_actions, device=x.device)).to(x.dtype)
        return torch.cat((x, onehot, prev_reward.to(x.dtype).unsqueeze(-1)), dim=-1)

    def forward(self, x, prev_action, prev_reward, state, reset=None) -> AgentOutput:
        h = state if reset is None else state.masked_fill(reset.unsqueeze(-1), 0.0)
        h = self.cell(self._inputs(x, prev_action, prev_reward), h)
        return AgentOutput(self.policy_head(h), self.value_head(h).squeeze(-1), h)

    def forward_sequence(self, x, prev_action, prev_reward, reset, state) -> AgentOutput:
        c = self.cell
        gi = torch.nn.functional.linear(self._inputs(x, prev_action, prev_reward), c.weight_ih, c.bias_ih)
        keep = (~reset).to(x.dtype).unsqueeze(-1)
        H = _GRUWindow.apply(gi, keep, state, c.weight_hh, c.bias_hh)
        return AgentOutput(self.policy_head(H), self.value_head(H).squeeze(-1), H[:, -1])


def gru_window_reference(gi, keep, h0, w_hh, b_hh) -> torch.Tensor:
    """The GRU recurrence over a window, step by step with autograd (``_GRUWindow``'s reference):
    gi [B, T, 3H] input projections (with b_ih), keep [B, T, 1] (0 where the memory resets before
    the step), h0 [B, H] -> hidden states [B, T, H]."""
    h, hs = h0, []
    for gi_t, keep_t in zip(gi.unbind(1), keep.unbind(1), strict=True):
        h = h * keep_t
        i_r, i_z, i_n = gi_t.chunk(3, dim=-1)
        h_r, h_z, h_n = torch.nn.functional.linear(h, w_hh, b_hh).chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (h - n)
        hs.append(h)
    return torch.stack(hs, dim=1)


def _gates_module(t: torch.Tensor):
    """metakern's C++ module when ``t`` is a CPU float32/float64 tensor it can take, else None."""
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return None
    try:
        from .. import _backend

        module = _backend.cpp_module()
    except (ImportError, RuntimeError):
        return None
    return module if hasattr(module, "gru_gates_forward") else None


class _GRUWindow(torch.autograd.Function):
    """The recurrent part of a GRU over a [B, T] window with resets, with a hand-written backward
    (``gru_window_reference`` is the same thing through autograd). The forward keeps the gates
    (r, z, n), the recurrent candidate W_hn h + b_hn and the reset-masked previous states (T B 5H
    values); the backward runs the recurrence in reverse with one [B, 3H] x [3H, H] product per step
    and forms the weight gradient as one [3H, T B] x [T B, H] product at the end. Per step, the
    element-wise gate arithmetic around the products is one C++ call on CPU
    (``cpp/policy/gru_gates.h``: ``gru_gates_forward`` / ``gru_gates_backward``) and plain tensor ops
    elsewhere, instead of the reference's ~30 autograd nodes. Differentiable once (PPO and A2C need
    first derivatives only)."""

    @staticmethod
    def forward(ctx, gi, keep, h0, w_hh, b_hh):
        B, T, H3 = gi.shape
        H = H3 // 3
        gi = gi.contiguous()
        keep_t = keep.transpose(0, 1)
        hprev = gi.new_empty(T, B, H)
        gates = gi.new_empty(T, B, H3)  # r, z, n
        ghn = gi.new_empty(T, B, H)
        out = gi.new_empty(T, B, H)
        module = _gates_module(gi)
        dt = int(gi.dtype == torch.float64)
        w_t = w_hh.t()
        h = h0
        for t in range(T):
            hp = torch.mul(h, keep_t[t], out=hprev[t])
            gh = torch.addmm(b_hh, hp, w_t)
            if module is not None:
                module.gru_gates_forward(dt, gi[:, t].data_ptr(), T * H3, gh.data_ptr(), hp.data_ptr(),
                                         gates[t].data_ptr(), ghn[t].data_ptr(), out[t].data_ptr(), B, H)  # fmt: skip
            else:
                rz = torch.sigmoid(gi[:, t, : 2 * H] + gh[:, : 2 * H], out=gates[t, :, : 2 * H])
                ghn[t].copy_(gh[:, 2 * H :])
                n = torch.tanh(torch.addcmul(gi[:, t, 2 * H :], rz[:, :H], ghn[t]), out=gates[t, :, 2 * H :])
                torch.addcmul(n, rz[:, H:], hp - n, out=out[t])
            h = out[t]
        ctx.save_for_backward(keep, w_hh, hprev, gates, ghn)
        return out.transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        keep, w_hh, hprev, gates, ghn = ctx.saved_tensors
        T, B, H = hprev.shape
        d_out = d_out.transpose(0, 1).contiguous()  # [T, B, H]
        keep_t = keep.transpose(0, 1)
        dgi = hprev.new_empty(T, B, 3 * H)
        dgh = hprev.new_empty(T, B, 3 * H)
        dh = torch.zeros_like(hprev[0])
        dh_z = torch.empty_like(dh)
        module = _gates_module(hprev)
        dt = int(hprev.dtype == torch.float64)
        for t in range(T - 1, -1, -1):
            if module is not None:
                module.gru_gates_backward(dt, dh.data_ptr(), d_out[t].data_ptr(), H, gates[t].data_ptr(),
                                          ghn[t].data_ptr(), hprev[t].data_ptr(), dgi[t].data_ptr(),
                                          dgh[t].data_ptr(), dh_z.data_ptr(), B, H)  # fmt: skip
            else:
                dh = dh + d_out[t]
                r, z, n = gates[t].chunk(3, dim=-1)
                d_pre_n = torch.mul(dh * (1 - z), 1 - n * n, out=dgi[t, :, 2 * H :])
                torch.mul(d_pre_n, r, out=dgh[t, :, 2 * H :])
                torch.mul(d_pre_n * ghn[t], r * (1 - r), out=dgi[t, :, :H])
                torch.mul(dh * (hprev[t] - n), z * (1 - z), out=dgi[t, :, H : 2 * H])
                dgh[t, :, : 2 * H] = dgi[t, :, : 2 * H]
                torch.mul(dh, z, out=dh_z)
            dh = torch.addmm(dh_z, dgh[t], w_hh).mul_(keep_t[t])
        flat = dgh.reshape(T * B, 3 * H)
        dw = flat.t() @ hprev.reshape(T * B, H)
        return dgi.transpose(0, 1), None, dh, dw, flat.sum(0)


def make_policy(cfg: RecurrentConfig, obs_dim: int, num_actions: int) -> nn.Module:
    """The agent of ``cfg`` (``AGENT``: GRU or MetODS), initialised from the run's seed without
    touching the caller's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(cfg.seed, "init"))
        if cfg.AGENT == "metods":
            from ..metods import MetODSPolicy

            return MetODSPolicy(
                obs_dim, num_actions, hidden=cfg.hidden, inner_steps=cfg.inner_steps, learn_alpha=cfg.learn_alpha,
                decay=cfg.decay, validate_args=False, device=cfg.device,
            )  # fmt: skip
        return GRUPolicy(obs_dim, num_actions, cfg.hidden).to(cfg.device)


def sample_actions(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Categorical draws by Gumbel-max with ``gen`` (reproducible, unlike ``Categorical.sample``)."""
    u = torch.rand(logits.shape, generator=gen, device=logits.device, dtype=logits.dtype)
    return (logits - torch.log(-torch.log(u.clamp_min(1e-20)))).argmax(-1)


# --------------------------------------------------------------------------------------------------
# Rollouts


class Rollout(NamedTuple):
    """T steps of B envs ([B, T] unless noted) and the memory state at the window's start."""

    x: torch.Tensor  # [B, T, D]
    prev_action: torch.Tensor
    prev_reward: torch.Tensor
    reset: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor  # the objective's rewards (exploratory episodes zeroed for E-RL2)
    raw_rewards: torch.Tensor
    trial_done: torch.Tensor
    state0: torch.Tensor  # [B, ...]
    bootstrap: torch.Tensor  # [B]: value after the last step


class RecurrentAgent:
    """The training loop of one run (module docstring)."""

    def __init__(self, cfg: RecurrentConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.env = make_env(cfg, "train", cfg.num_envs, seed=_seed(cfg.seed, "train-env"))
        self.policy = make_policy(cfg, input_size(self.env), self.env.num_actions)
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, eps=1e-5)
        self.gen = torch.Generator(device=self.device).manual_seed(_seed(cfg.seed, "actions"))
        self.iteration = 0
        self.env_steps = 0
        B = cfg.num_envs
        self.state = self.policy.initial_state(B, self.device)
        self.inputs = observe(self.env, self.env.observe(), torch.ones(B, dtype=torch.bool, device=self.device))
        self._eval_envs: dict[str, envs.BatchedEnv] = {}

    # -- collection ---------------------------------------------------------------------------

    @torch.no_grad()
    def collect(self) -> Rollout:
        cfg, env, policy = self.cfg, self.env, self.policy
        T = cfg.rollout_steps
        state0 = self.state
        state, inp = self.state, self.inputs
        rec = {k: [] for k in ("x", "prev_action", "prev_reward", "reset", "actions", "logp", "values", "rewards",
                               "raw_rewards", "trial_done")}  # fmt: skip
        for _ in range(T):
            out = policy(inp.x, inp.prev_action, inp.prev_reward, state, inp.reset)
            logp_all = torch.log_softmax(out.logits, -1)
            a = sample_actions(logp_all, self.gen)
            step = env.step(a.to(torch.int32))
            r = step.reward
            keep = ~step.info["explore"] if cfg.explore_episodes else None
            for k, v in (("x", inp.x), ("prev_action", inp.prev_action), ("prev_reward", inp.prev_reward),
                         ("reset", inp.reset), ("actions", a), ("logp", logp_all.gather(-1, a[:, None])[:, 0]),
                         ("values", out.value), ("rewards", r if keep is None else r * keep), ("raw_rewards", r),
                         ("trial_done", step.info["trial_done"])):  # fmt: skip
                rec[k].append(v)
            state = out.state
            inp = observe(env, step.obs, step.info["trial_done"].clone())
        bootstrap = policy(inp.x, inp.prev_action, inp.prev_reward, state, inp.reset).value
        self.state, self.inputs = state, inp
        self.env_steps += T * cfg.num_envs
        st = {k: torch.stack(v, dim=1) for k, v in rec.items()}
        return Rollout(state0=state0, bootstrap=bootstrap, **st)

    # -- update -------------------------------------------------------------------------------

    def update(self, ro: Rollout) -> dict[str, float]:
        cfg = self.cfg
        adv, ret = gae(ro.rewards, ro.values, cfg.gamma, cfg.gae_lambda, dones=ro.trial_done, bootstrap=ro.bootstrap)
        B = cfg.num_envs
        epochs, groups = (cfg.epochs, cfg.minibatches) if cfg.update == "ppo" else (1, 1)
        stats = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_frac": 0.0}
        n = 0
        for _ in range(epochs):
            order = torch.randperm(B, generator=self.gen, device=self.device)
            for idx in order.chunk(groups):
                out = self.policy.forward_sequence(
                    ro.x[idx], ro.prev_action[idx], ro.prev_reward[idx], ro.reset[idx], ro.state0[idx]
                )
                logp_all = torch.log_softmax(out.logits, -1)
                logp = logp_all.gather(-1, ro.actions[idx].unsqueeze(-1)).squeeze(-1)
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                a = adv[idx]
                if cfg.update == "ppo":
                    a = (a - a.mean()) / (a.std() + 1e-8)
                    ratio = torch.exp(logp - ro.logp[idx])
                    policy_loss = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a).mean()
                    clip_frac = float(((ratio - 1).abs() > cfg.clip).float().mean())
                else:
                    policy_loss = -(logp * a).mean()
                    clip_frac = 0.0
                value_loss = 0.5 * (out.value - ret[idx]).pow(2).mean()
                loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.opt.step()
                for k, v in (("loss", loss), ("policy_loss", policy_loss), ("value_loss", value_loss),
                             ("entropy", entropy), ("clip_frac", clip_frac)):  # fmt: skip
                    stats[k] += float(v.detach()) if isinstance(v, torch.Tensor) else v
                n += 1
        return {k: v / n for k, v in stats.items()}

    def step(self) -> dict[str, float]:
        ro = self.collect()
        stats = self.update(ro)
        # trials span windows, so the training signal logged is the raw reward per env-step
        stats["reward_per_step"] = float(ro.raw_rewards.mean())
        stats["trials_ended"] = float(ro.trial_done.sum())
        return stats

    # -- evaluation ---------------------------------------------------------------------------

    def _eval_env(self, key: str, maze_size: int | None = None) -> envs.BatchedEnv:
        if key not in self._eval_envs:
            self._eval_envs[key] = make_env(
                self.cfg, "test", self.cfg.eval_trials, seed=_seed(self.cfg.seed, key), maze_size=maze_size
            )
        return self._eval_envs[key]

    @torch.no_grad()
    def play_trials(self, env: envs.BatchedEnv, it: int, tag: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One trial in each env of ``env`` (test tasks 0, 1, ... cycling over the pool). Returns
        rewards [B, L], the episode index of each step [B, L] and a mask [B, L] of the steps inside
        the trial (L: the longest trial)."""
        B = env.num_envs
        env.reset(seed=_seed(self.cfg.seed, it, tag))
        tasks = torch.arange(B, device=self.device) % env.family.num_tasks()
        obs = env.set_tasks(tasks)
        gen = torch.Generator(device=self.device).manual_seed(_seed(self.cfg.seed, it, tag, "actions"))
        state = self.policy.initial_state(B, self.device)
        inp = observe(env, obs, torch.ones(B, dtype=torch.bool, device=self.device))
        alive = torch.ones(B, dtype=torch.bool, device=self.device)
        rewards, episodes, masks = [], [], []
        while bool(alive.any()):
            out = self.policy(inp.x, inp.prev_action, inp.prev_reward, state, inp.reset)
            a = sample_actions(torch.log_softmax(out.logits, -1), gen)
            step = env.step(a.to(torch.int32))
            rewards.append(step.reward * alive)
            episodes.append(step.info["episode"].long())
            masks.append(alive.clone())
            alive &= ~step.info["trial_done"]
            state = out.state
            inp = observe(env, step.obs, step.info["trial_done"].clone())
        return torch.stack(rewards, 1), torch.stack(episodes, 1), torch.stack(masks, 1)

    def evaluate(self, it: int) -> dict[str, float]:
        cfg = self.cfg
        if cfg.env == "harlow":
            r, _, _ = self.play_trials(self._eval_env("eval"), it, "eval")
            fam = self._eval_envs["eval"].family
            period = fam.fixation_steps + 1
            choices = r[:, period - 1 :: period]  # [B, presentations]
            return {
                "eval_return": float(r.sum(1).mean()),
                "eval_first_choice": float(choices[:, 0].mean()),
                "eval_later_choices": float(choices[:, 1:].mean()),
            }
        if cfg.env == "maze" and cfg.maze_variant == "metods":
            row = maze_metrics(*self.play_trials(self._eval_env("eval"), it, "eval"), prefix="eval_")
            large = self._eval_env("eval-large", cfg.eval_large_maze)
            row.update(maze_metrics(*self.play_trials(large, it, "eval-large"), prefix="eval_large_"))
            return row
        r, ep, _ = self.play_trials(self._eval_env("eval"), it, "eval")
        per_episode = torch.stack([(r * (ep == e)).sum(1) for e in range(5)], 1)  # [B, 5]
        return {
            "eval_explore_return": float(per_episode[:, :3].sum(1).mean() / 3),
            "eval_return": float(per_episode[:, 3:].sum(1).mean() / 2),
        }

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        env = self.env
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "policy": self.policy.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "memory": self.state.cpu(),
            "inputs": tuple(t.cpu() for t in self.inputs),
            "env_state": {k: v.cpu().clone() for k, v in env.state.items()},
            "env_bk": {k: v.cpu().clone() for k, v in env.bk.items()},
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.iteration = int(s["iteration"])
        self.env_steps = int(s["env_steps"])
        self.policy.load_state_dict(s["policy"])
        self.opt.load_state_dict(s["opt"])
        self.gen.set_state(s["gen"])
        self.state = s["memory"].to(self.device)
        self.inputs = Inputs(*(t.to(self.device) for t in s["inputs"]))
        for k, v in s["env_state"].items():
            self.env.state[k].copy_(v)
        for k, v in s["env_bk"].items():
            self.env.bk[k].copy_(v)


def maze_metrics(rewards: torch.Tensor, episodes: torch.Tensor, mask: torch.Tensor, *, prefix: str = "") -> dict:
    """MetODS' maze table from one episode per row: steps to the first positive reward (the
    episode length when none, as the paper assigns 100), success rate, cumulative reward."""
    L = rewards.shape[1]
    hit = (rewards > 0) & mask
    steps = torch.arange(1, L + 1, device=rewards.device).expand_as(rewards)
    first = torch.where(hit, steps, L).amin(1).float()
    return {
        f"{prefix}first_reward_step": float(first.mean()),
        f"{prefix}success": float(hit.any(1).float().mean()),
        f"{prefix}cum_reward": float(rewards.sum(1).mean()),
    }


# --------------------------------------------------------------------------------------------------
# train


EVAL_COLUMNS = {
    "harlow": ("eval_return", "eval_first_choice", "eval_later_choices"),
    "maze-metods": (
        "eval_first_reward_step",
        "eval_success",
        "eval_cum_reward",
        "eval_large_first_reward_step",
        "eval_large_success",
        "eval_large_cum_reward",
    ),
    "trials": ("eval_explore_return", "eval_return"),
}


PLOTS = (("reward_per_step",), ("entropy",), ("value_loss",))


def eval_columns(cfg: RecurrentConfig) -> tuple[str, ...]:
    if cfg.env == "harlow":
        return EVAL_COLUMNS["harlow"]
    if cfg.env == "maze" and cfg.maze_variant == "metods":
        return EVAL_COLUMNS["maze-metods"]
    return EVAL_COLUMNS["trials"]


def train(config: RecurrentConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
          name: str = "rl2") -> dict[str, float]:  # fmt: skip
    """Train for ``config.iterations`` iterations (one rollout + one update each) in the run folder
    ``run_dir`` (``algos.run``): a metrics row per iteration (evaluation columns every
    ``eval_every``), checkpoints every ``checkpoint_every`` and at the end, plots at the end.
    Returns the last row with evaluation."""
    import time

    config.validate()
    run = Run(run_dir, config, resume=resume)
    agent = RecurrentAgent(config)
    if run.state is not None:
        agent.load_state_dict(run.state)
    cols = eval_columns(config)
    headline = "eval_cum_reward" if "eval_cum_reward" in cols else "eval_return"
    bar = Progress(config.iterations, f"{name} {config.env}", start=run.start, enabled=progress)
    last_eval: dict[str, float] = {}
    try:
        for it in range(run.start, config.iterations):
            t0 = time.perf_counter()
            row = agent.step()
            seconds = time.perf_counter() - t0
            agent.iteration = it + 1
            if it % config.eval_every == 0 or it + 1 == config.iterations:
                last_eval = agent.evaluate(it)
                row.update(last_eval)
            else:
                row.update(dict.fromkeys(cols, math.nan))
            run.log({"iteration": it, "env_steps": agent.env_steps, "seconds": seconds,
                     "env_steps_per_s": config.num_envs * config.rollout_steps / seconds, **row})  # fmt: skip
            if agent.iteration % config.checkpoint_every == 0 or agent.iteration == config.iterations:
                run.save(agent.state_dict())
            shown = {"eval": last_eval[headline]} if last_eval else {}
            bar.update(agent.iteration, r=row["reward_per_step"], **shown)
        run.plot((*PLOTS[:1], cols, *PLOTS[1:]), title=f"{name} on {config.env} (seed {config.seed})")
    finally:
        run.close()
    return {"iteration": agent.iteration, "env_steps": agent.env_steps, **last_eval}
