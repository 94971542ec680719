"""End-to-end training throughput of the recurrent meta-RL agents (issue 8's target), family ``recurrent``.

One call = one training iteration, ``RecurrentAgent.step()``: ``rollout_steps`` (T) steps of all
``num_envs`` (B) environments under the current policy, then the PPO update (``epochs`` x
``minibatches`` passes over the [B, T] window, truncated BPTT from the window's stored starting
memory). ``items`` = B * T env-steps per call, so ``items_per_s`` is env-steps/s including the update.
Two cases:

* ``rl2-ppo-krazyworld`` (B=1024, T=50): RL2-PPO (``RL2Config`` defaults: GRU of 64, 5-episode
  trials) on Krazy World, trials drawn from E-MAML's 32 training tasks;
* ``metods-ppo-maze`` (B=256, T=100): MetODS-PPO (``MetODSConfig`` defaults: N = 64 neurons, S = 2
  inner steps) on MetODS' maze (``maze_variant="metods"``, 100-step one-episode trials).

Implementations:

* ``cpp``: metakern's ``RecurrentAgent`` (``metakern.algos.recurrent``): the batched C++ environment
  kernel, the fused GAE op, the GRU window pass with its C++ gate kernels or, for MetODS, the fused
  synapse ops. (No ``reference`` row: metakern on its numpy reference env and the ops' reference code
  took 20-60 s per call, which would triple the family's share of a ``metakern bench`` run.)
* ``gym-sync-torch`` (the baseline): the loop a PyTorch user writes today for the same agent with the
  same hyper-parameters (``ReferenceRecurrentPPO``): gymnasium's ``SyncVectorEnv`` (``SAME_STEP``
  autoreset) of B single metakern envs on the numpy reference backend (one shared task pool), the
  trial bookkeeping (previous action and reward, new-episode flag, trial starts) kept in Python from
  the info dicts, a plain ``nn.Module`` agent (``PlainRL2``: ``nn.GRUCell`` + two linear heads;
  ``PlainMetODS``: Algorithm 1 of Chalvidal et al. written out in torch, S reads/writes of [B, N, N]
  per step), ``torch.distributions.Categorical`` sampling, GAE by a Python loop over reversed time,
  and PPO re-running the recurrence step by step over the window (autograd through every step:
  naive BPTT, every W kept for MetODS).

Both sides build their envs with ``recurrent.make_env`` (``train_env``): with ``krazy_train_tasks=32``
that is E-MAML's 32 training tasks (``algos.rollout.krazy_split``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from .. import envs
from ..algos import recurrent
from ..algos.metods import MetODSConfig
from ..algos.rl2 import RL2Config
from .harness import Case, Impl, register

FAMILY = "recurrent"
BASELINE = "gym-sync-torch"
RL2_CASE = "rl2-ppo-krazyworld"
METODS_CASE = "metods-ppo-maze"


def rl2_config(num_envs: int = 1024, rollout_steps: int = 50, **kw) -> RL2Config:
    """The RL2 case's settings: ``RL2Config`` defaults on Krazy World with E-MAML's 32 training tasks."""
    return RL2Config(env="krazyworld", num_envs=num_envs, rollout_steps=rollout_steps, krazy_train_tasks=32, **kw)


def metods_config(num_envs: int = 256, rollout_steps: int = 100, hidden: int = 64, inner_steps: int = 2, **kw):
    """The MetODS case's settings: ``MetODSConfig`` defaults (MetODS' maze)."""
    return MetODSConfig(num_envs=num_envs, rollout_steps=rollout_steps, hidden=hidden, inner_steps=inner_steps, **kw)


# --------------------------------------------------------------------------------------------------
# Environments


def train_env(cfg: recurrent.RecurrentConfig, num_envs: int, *, seed: int) -> envs.BatchedEnv:
    """The training envs of ``cfg`` (``recurrent.make_env(cfg, "train", ...)``)."""
    return recurrent.make_env(cfg, "train", num_envs, seed=seed)


def single_env(proto: envs.BatchedEnv, seed: int):
    """One ``gymnasium.Env`` with ``proto``'s rules, task pool (the same family object) and trial
    settings, on the numpy reference backend (autoreset disabled: the vector env resets it)."""
    from ..envs.gym import MetakernEnv

    return MetakernEnv(
        envs.BatchedEnv(
            proto.family, 1, backend="reference", autoreset_mode="disabled", max_steps=proto.max_steps,
            episodes_per_trial=proto.episodes_per_trial, explore_episodes=proto.explore_episodes,
            resample_tasks=proto.resample_tasks, task_range=proto.task_range, seed=seed,
        )
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The plain agents


def _onehot(prev_action: torch.Tensor, num_actions: int) -> torch.Tensor:
    """one_hot of the previous action, zeros where there is none (-1, a trial's first step)."""
    return nn.functional.one_hot(prev_action.clamp_min(0), num_actions).float() * (prev_action >= 0).float()[:, None]


class PlainRL2(nn.Module):
    """RL2's GRU actor-critic as a PyTorch user writes it: ``nn.GRUCell`` over [x, onehot(a), r]
    and two linear heads (the parameters and names of ``recurrent.GRUPolicy``)."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int = 64):
        super().__init__()
        self.num_actions, self.hidden = num_actions, hidden
        self.cell = nn.GRUCell(obs_dim + num_actions + 1, hidden)
        self.policy_head = nn.Linear(hidden, num_actions)
        self.value_head = nn.Linear(hidden, 1)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden)

    def forward(self, x, prev_action, prev_reward, h, reset):
        """One step: (logits [B, A], value [B], h [B, H]); h restarts from 0 where ``reset``."""
        h = h * (~reset).float()[:, None]
        h = self.cell(torch.cat([x, _onehot(prev_action, self.num_actions), prev_reward[:, None]], 1), h)
        return self.policy_head(h), self.value_head(h)[:, 0], h


class PlainMetODS(nn.Module):
    """MetODS' actor-critic as a PyTorch user writes it (the parameters and names of
    ``metakern.metods.MetODSPolicy``, discrete actions, tanh reads): v0 = tanh(embed([x, onehot(a),
    r])), then Algorithm 1's S read/write steps on the synapses W [B, N, N], then linear heads."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int = 64, inner_steps: int = 2, decay: float = 0.95,
                 learn_alpha: bool = True):  # fmt: skip
        super().__init__()
        N, S = hidden, inner_steps
        self.num_actions, self.hidden, self.inner_steps = num_actions, N, S
        self.embed = nn.Linear(obs_dim + num_actions + 1, N)
        self.policy_head = nn.Linear(N, num_actions)
        self.value_head = nn.Linear(N, 1)
        alpha = torch.randn(N, N) * (1.0 / math.sqrt(N))
        lam = decay ** (1.0 / S)
        kappa, beta = torch.zeros(S, S + 1), torch.zeros(S, S + 1)
        for s in range(1, S + 1):
            kappa[s - 1, s - 1] = kappa[s - 1, s] = 1.0
            beta[s - 1, s - 1], beta[s - 1, s] = lam, 1.0 - lam
        self.kappa, self.beta = nn.Parameter(kappa), nn.Parameter(beta)
        if learn_alpha:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)
        self.register_buffer("w0", torch.zeros(N, N))

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return self.w0.expand(batch_size, self.hidden, self.hidden).clone()

    def synapses(self, v0: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 1, one env step: S reads and writes of W starting from v0."""
        kappa, beta = self.kappa, self.beta
        vs, Ws = [v0], [W]
        for s in range(1, self.inner_steps + 1):
            read = torch.tanh(torch.bmm(Ws[s - 1], vs[s - 1].unsqueeze(-1)).squeeze(-1))
            v = kappa[s - 1, s] * read
            Wn = beta[s - 1, s] * (self.alpha * (vs[s - 1].unsqueeze(-1) * vs[s - 1].unsqueeze(-2)))
            for j in range(s):
                v = v + kappa[s - 1, j] * vs[j]
                Wn = Wn + beta[s - 1, j] * Ws[j]
            vs.append(v)
            Ws.append(Wn)
        return vs[-1], Ws[-1]

    def forward(self, x, prev_action, prev_reward, W, reset):
        """One step: (logits [B, A], value [B], W [B, N, N]); W restarts from W0 where ``reset``."""
        W = torch.where(reset[:, None, None], self.w0, W)
        v0 = torch.tanh(self.embed(torch.cat([x, _onehot(prev_action, self.num_actions), prev_reward[:, None]], 1)))
        v, W = self.synapses(v0, W)
        return self.policy_head(v), self.value_head(v)[:, 0], W


def plain_agent(cfg: recurrent.RecurrentConfig, obs_dim: int, num_actions: int) -> nn.Module:
    torch.manual_seed(recurrent._seed(cfg.seed, "init"))
    if cfg.AGENT == "metods":
        return PlainMetODS(obs_dim, num_actions, cfg.hidden, cfg.inner_steps, cfg.decay, cfg.learn_alpha)
    return PlainRL2(obs_dim, num_actions, cfg.hidden)


def plain_sequence(net: nn.Module, x, prev_action, prev_reward, reset, state):
    """The window [B, T] re-run one step at a time from ``state`` (autograd through every step):
    (logits [B, T, A], values [B, T])."""
    logits, values = [], []
    for t in range(x.shape[1]):
        lg, v, state = net(x[:, t], prev_action[:, t], prev_reward[:, t], state, reset[:, t])
        logits.append(lg)
        values.append(v)
    return torch.stack(logits, 1), torch.stack(values, 1)


# --------------------------------------------------------------------------------------------------
# The reference loop (plain PyTorch + gymnasium)


def _info_flag(infos: dict, key: str, done: np.ndarray, num_envs: int) -> np.ndarray:
    """A per-env bool of the step's info: SAME_STEP puts the info of the envs whose episode ended
    in ``infos["final_info"]`` (their top-level info is the reset's)."""
    out = np.zeros(num_envs, dtype=bool)
    if key in infos:
        out |= infos[key].astype(bool) & infos["_" + key]
    final = infos.get("final_info")
    if final is not None and key in final:
        out[done] = final[key][done].astype(bool) & final["_" + key][done]
    return out


class ReferenceRecurrentPPO:
    """The plain loop (module docstring): gymnasium SyncVectorEnv + a plain torch agent + PPO."""

    def __init__(self, cfg: recurrent.RecurrentConfig, *, seed: int | None = None):
        import gymnasium

        if cfg.update != "ppo":
            raise ValueError("the reference loop implements update='ppo' only")
        self.cfg = cfg
        B = cfg.num_envs
        proto = train_env(cfg, 1, seed=0)  # the family (task pool) every single env shares
        self.envs = gymnasium.vector.SyncVectorEnv(
            [functools.partial(single_env, proto, i) for i in range(B)],
            autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP,
        )
        self.num_actions = proto.num_actions
        self.net = plain_agent(cfg, math.prod(proto.obs_shape) + 1, self.num_actions)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, eps=1e-5)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.env_steps = 0
        obs, _ = self.envs.reset(seed=recurrent._seed(cfg.seed, "train-env") if seed is None else seed)
        self.state = self.net.initial_state(B)
        first = torch.ones(B, dtype=torch.bool)
        self.inputs = self._inputs(obs, first, torch.full((B,), -1), torch.zeros(B), first)

    @staticmethod
    def _inputs(obs, new_episode, prev_action, prev_reward, reset) -> recurrent.Inputs:
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(len(obs), -1)
        return recurrent.Inputs(torch.cat([x, new_episode.float()[:, None]], 1), prev_action, prev_reward, reset)

    def env_step(self, actions: torch.Tensor):
        """Step the vector env and keep the trial bookkeeping: (next inputs, reward [B], explore [B],
        trial_done [B])."""
        B = self.cfg.num_envs
        obs, r, term, trunc, infos = self.envs.step(actions.numpy())
        done = term | trunc
        trial_done = torch.from_numpy(_info_flag(infos, "trial_done", done, B))
        explore = torch.from_numpy(_info_flag(infos, "explore", done, B))
        reward = torch.as_tensor(r, dtype=torch.float32)
        # a new trial starts after a trial's last step: no previous action / reward, memory reset
        prev_action = torch.where(trial_done, -1, actions)
        prev_reward = torch.where(trial_done, 0.0, reward)
        return (
            self._inputs(obs, torch.from_numpy(done), prev_action, prev_reward, trial_done),
            reward,
            explore,
            trial_done,
        )

    @torch.no_grad()
    def collect(self) -> recurrent.Rollout:
        cfg = self.cfg
        state0, state, inp = self.state, self.state, self.inputs
        keys = ("x", "prev_action", "prev_reward", "reset", "actions", "logp", "values", "rewards", "raw_rewards",
                "trial_done")  # fmt: skip
        rec = {k: [] for k in keys}
        for _ in range(cfg.rollout_steps):
            logits, value, state = self.net(inp.x, inp.prev_action, inp.prev_reward, state, inp.reset)
            dist = Categorical(logits=logits)
            a = dist.sample()
            nxt, r, explore, trial_done = self.env_step(a)
            objective = r * ~explore if cfg.explore_episodes else r
            for k, v in zip(keys, (*inp, a, dist.log_prob(a), value, objective, r, trial_done), strict=True):
                rec[k].append(v)
            inp = nxt
        bootstrap = self.net(inp.x, inp.prev_action, inp.prev_reward, state, inp.reset)[1]
        self.state, self.inputs = state, inp
        self.env_steps += cfg.num_envs * cfg.rollout_steps
        return recurrent.Rollout(**{k: torch.stack(v, 1) for k, v in rec.items()}, state0=state0, bootstrap=bootstrap)

    def gae(self, w: recurrent.Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE over reversed time, a trial's end terminal: (advantages, returns) [B, T]."""
        cfg = self.cfg
        T = w.rewards.shape[1]
        adv = torch.zeros_like(w.rewards)
        last = torch.zeros_like(w.bootstrap)
        for t in reversed(range(T)):
            next_value = w.bootstrap if t == T - 1 else w.values[:, t + 1]
            cont = 1.0 - w.trial_done[:, t].float()
            delta = w.rewards[:, t] + cfg.gamma * next_value * cont - w.values[:, t]
            last = delta + cfg.gamma * cfg.gae_lambda * cont * last
            adv[:, t] = last
        return adv, adv + w.values

    def loss(self, w: recurrent.Rollout, adv: torch.Tensor, ret: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The PPO loss of the envs ``idx``: clipped surrogate on normalised advantages, value MSE,
        entropy bonus."""
        cfg = self.cfg
        logits, values = plain_sequence(
            self.net, w.x[idx], w.prev_action[idx], w.prev_reward[idx], w.reset[idx], w.state0[idx]
        )
        dist = Categorical(logits=logits)
        logp = dist.log_prob(w.actions[idx])
        a = adv[idx]
        a = (a - a.mean()) / (a.std() + 1e-8)
        ratio = torch.exp(logp - w.logp[idx])
        policy_loss = -torch.min(ratio * a, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * a).mean()
        value_loss = 0.5 * ((values - ret[idx]) ** 2).mean()
        return policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * dist.entropy().mean()

    def update(self, w: recurrent.Rollout) -> float:
        cfg = self.cfg
        adv, ret = self.gae(w)
        total = 0.0
        for _ in range(cfg.epochs):
            for idx in torch.randperm(cfg.num_envs, generator=self.gen).chunk(cfg.minibatches):
                loss = self.loss(w, adv, ret, idx)
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.opt.step()
                total += loss.item()
        return total / (cfg.epochs * cfg.minibatches)

    def step(self) -> float:
        return self.update(self.collect())

    def close(self) -> None:
        self.envs.close()


# --------------------------------------------------------------------------------------------------
# Cases


def _ours(inputs: dict[str, Any]) -> Callable[[], Any]:
    return recurrent.RecurrentAgent(inputs["config"]).step


def _reference_loop(inputs: dict[str, Any]) -> Callable[[], Any]:
    return ReferenceRecurrentPPO(inputs["config"]).step


def _impls() -> list[Impl]:
    return [
        Impl("cpp", _ours, backend="cpp"),
        Impl(BASELINE, _reference_loop, kind="peer"),
    ]


def _case(name: str, shape: str, cfg: recurrent.RecurrentConfig, obs_dim: int, what: str) -> Case:
    steps = cfg.num_envs * cfg.rollout_steps
    return Case(
        family=FAMILY,
        name=name,
        shape=shape,
        device=torch.device("cpu"),
        dtype=torch.float32,
        items=steps,
        # per env-step the window keeps the agent's input (obs + new-episode flag) and 8 scalars
        bytes_moved=steps * ((obs_dim + 1) * 4 + 32),
        make_inputs=lambda: {"config": cfg},
        impls=_impls(),
        note=(
            f"one {what} training iteration (collect {cfg.rollout_steps} steps of {cfg.num_envs} envs + PPO update, "
            f"{cfg.epochs} epochs x {cfg.minibatches} minibatches); env-steps/s with {steps} env-steps per "
            "iteration; speed-up vs gymnasium SyncVectorEnv + a plain torch agent"
        ),
        baseline=BASELINE,
    )


def rl2_case(num_envs: int = 1024, rollout_steps: int = 50) -> Case:
    """RL2-PPO on Krazy World (E-MAML's 32 training tasks)."""
    cfg = rl2_config(num_envs, rollout_steps)
    return _case(RL2_CASE, f"B={num_envs},T={rollout_steps},H={cfg.hidden}", cfg, 90, "RL2-PPO Krazy World")


def metods_case(num_envs: int = 256, rollout_steps: int = 100, hidden: int = 64, inner_steps: int = 2) -> Case:
    """MetODS-PPO on MetODS' maze."""
    from ..envs.maze import OBS_SIZE

    cfg = metods_config(num_envs, rollout_steps, hidden, inner_steps)
    shape = f"B={num_envs},T={rollout_steps},N={hidden},S={inner_steps}"
    return _case(METODS_CASE, shape, cfg, OBS_SIZE, "MetODS-PPO maze")


@register(FAMILY)
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    if device.type != "cpu" or dtype != torch.float32:
        return
    yield rl2_case()
    yield metods_case()


__all__ = [
    "BASELINE",
    "FAMILY",
    "PlainMetODS",
    "PlainRL2",
    "ReferenceRecurrentPPO",
    "metods_case",
    "plain_sequence",
    "rl2_case",
    "train_env",
]
