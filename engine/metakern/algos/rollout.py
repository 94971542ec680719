"""Environments, linear-softmax policies and batched episode collection for the MAML family.

The gradient-based algorithms (MAML-RL, E-MAML, ProMP) adapt one policy per task, so a policy here
is a weight tensor ``W [N, F, A]`` (one copy per task of the meta-batch) over features
``phi(obs) [F]``, with ``log pi(a | obs) = log_softmax(phi(obs) @ W)[a]``: metakern's
``linear_softmax_log_prob`` op, whose closed-form first and second derivatives make the inner
adaptation step and the meta-gradient through it (a Hessian-vector product) O(N E T F A). The
features are the observation as the env gives it plus a constant 1:

=============  ======================================================  ==========================
env            observation (metakern env options)                      features F
=============  ======================================================  ==========================
krazyworld     the agent's 3x3 neighbourhood, one-hot tile ids          90 + 1
               (``obs_view="patch"``, ``obs_mode="onehot"``), E-MAML
               settings; the 64 E-MAML test tasks, and a pool of
               ``krazy_train_tasks`` = 1024 training tasks from which
               each meta-batch draws 32 (App. C: "32 new tasks sampled
               from the training environments" per iteration; a fixed
               set of 32 is memorised: the start's neighbourhood names
               the task; 32 gives E-MAML's 32 training seeds)
maze           15-d: new-episode flag, previous reward, previous        15 + 1
               action one-hot, 3x3 wall patch (E-MAML mazes, 10x10)
tabular        one-hot state (RL^2 tabular MDPs, 10 states, 5 actions,  10 (a tabular policy)
               episodes of 10 steps)
=============  ======================================================  ==========================

``collect`` plays one episode in each of ``E`` environments of each of ``N`` tasks with the
policies ``W`` and returns them as ``[N, E, T]`` tensors, T the longest episode, steps after an
episode's end masked out (``mask`` 0, reward 0). Episodes of one task are independent draws of the
same MDP (a reset within a trial restores the board and start), so ``E`` parallel episodes are
what a sequential sampler would collect.

Policies (``make_policy``): ``linear`` (the above; the default) and ``mlp``, a per-task
functional network ``phi -> tanh(. W_1) -> ... -> tanh(. W_L) -> logits`` whose parameters are one
flat vector per task ``[N, D]`` (hidden layers with a bias each, the first layer's bias being the
features' trailing 1). Its read-out is the same fused ``linear_softmax_log_prob`` op on the last
hidden layer (plus a 1), which is differentiable twice in both the read-out weights and the hidden
features, so the inner step and the meta-gradient through it are autograd through the tanh layers
and metakern's closed forms for the softmax. The hidden layers start at N(0, 1/fan_in) and the
read-out at 0 (a uniform policy, as the linear policy's zeros).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import envs
from ..envs.maze import default_horizon
from ..ops.policy import linear_softmax_log_prob
from ..returns import discounted_returns

ENVS = ("krazyworld", "maze", "tabular")
POLICIES = ("linear", "mlp")


@dataclass(frozen=True)
class EnvSpec:
    """How the algorithms build and featurise one env family (see the module docstring)."""

    name: str
    num_features: int
    num_actions: int
    num_train_tasks: int
    num_test_tasks: int
    max_steps: int
    bias: bool = True


def env_spec(name: str, *, maze_size: int = 10, krazy_train_tasks: int = 1024) -> EnvSpec:
    if name == "krazyworld":
        if isinstance(krazy_train_tasks, bool) or not isinstance(krazy_train_tasks, int) or krazy_train_tasks < 1:
            raise ValueError(f"krazy_train_tasks must be a positive int, got {krazy_train_tasks!r}")
        return EnvSpec(name, 91, 4, krazy_train_tasks, 64, 100)
    if name == "maze":
        return EnvSpec(name, 16, 4, 1000, 64, default_horizon(maze_size))
    if name == "tabular":
        return EnvSpec(name, 10, 5, 1000, 100, 10, bias=False)
    raise ValueError(f"env must be one of {ENVS}, got {name!r}")


def krazy_split(split: str, num_train_tasks: int) -> dict:
    """Krazy World task options: the 64 E-MAML test tasks; for training, E-MAML's 32 task seeds
    when 32 tasks are asked for, else a pool of that many (``split="train"``)."""
    if split == "test":
        return {"split": "emaml_test"}
    if num_train_tasks == 32:
        return {"split": "emaml_train"}
    return {"split": "train", "num_tasks": num_train_tasks}


def make_env(
    name: str,
    split: str,
    num_envs: int,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    maze_size: int = 10,
    krazy_train_tasks: int = 1024,
    krazy_permute_ids: bool = False,
) -> envs.BatchedEnv:
    """``num_envs`` environments of the ``"train"`` or ``"test"`` tasks of ``name``, one episode per
    trial, tasks held until ``set_tasks`` (the algorithm assigns them). Krazy World's tile ids are
    the same in every task unless ``krazy_permute_ids`` (the 2.0 code E-MAML ran permutes colours
    only in image observations, so its state observations keep fixed ids)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = env_spec(name, maze_size=maze_size, krazy_train_tasks=krazy_train_tasks)
    common = dict(episodes_per_trial=1, explore_episodes=0, resample_tasks=False, seed=seed, device=device)
    if name == "krazyworld":
        tasks = krazy_split(split, spec.num_train_tasks)
        return envs.KrazyWorld(
            num_envs, obs_view="patch", obs_mode="onehot", max_steps=spec.max_steps,
            permute_colors=krazy_permute_ids, **tasks, **common,
        )  # fmt: skip
    if name == "maze":
        n = spec.num_train_tasks if split == "train" else spec.num_test_tasks
        return envs.Maze(num_envs, size=maze_size, split=split, num_mazes=n, **common)
    n = spec.num_train_tasks if split == "train" else spec.num_test_tasks
    return envs.TabularMDP(num_envs, split=split, num_tasks=n, max_steps=spec.max_steps, **common)


def features(spec: EnvSpec, obs: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """phi(obs): the observation as floats, plus a trailing 1 when the spec has a bias feature."""
    x = obs.to(dtype)
    if spec.bias:
        x = torch.cat((x, x.new_ones((*x.shape[:-1], 1))), dim=-1)
    return x


class Episodes(NamedTuple):
    """One episode per row, ``[N tasks, E episodes, T steps]`` (features ``[N, E, T, F]``)."""

    features: torch.Tensor
    actions: torch.Tensor  # int64
    rewards: torch.Tensor
    mask: torch.Tensor  # 1 inside the episode, 0 after its end
    logp: torch.Tensor  # behaviour log-probabilities (the sampling policy's), detached
    policy: Policy | None = None  # the policy family that sampled them (None: linear-softmax)

    @property
    def env_steps(self) -> int:
        return int(self.mask.sum())

    def returns(self, gamma: float) -> torch.Tensor:
        """Discounted reward-to-go G_t within each episode (0 after its end), [N, E, T]."""
        N, E, T = self.rewards.shape
        return discounted_returns(self.rewards.reshape(N * E, T), gamma).reshape(N, E, T) * self.mask

    def episode_return(self) -> torch.Tensor:
        """Undiscounted return of each episode, [N, E]."""
        return self.rewards.sum(-1)

    def log_prob(self, weight: torch.Tensor) -> torch.Tensor:
        """log pi_W(a_t | s_t) [N, E, T] for per-task parameters ``W`` (linear: ``[N, F, A]``):
        metakern's fused op, differentiable twice in W (the padded steps after an episode's end
        carry no signal)."""
        return (self.policy or LINEAR).log_prob(weight, self.features, self.actions)


def collect(
    env: envs.BatchedEnv,
    spec: EnvSpec,
    weight: torch.Tensor,
    tasks: torch.Tensor,
    episodes_per_task: int,
    generator: torch.Generator,
    seed: int,
    policy: Policy | None = None,
) -> Episodes:
    """Play one episode in each of ``episodes_per_task`` (E) envs per task with the per-task
    parameters ``weight`` of ``policy`` (default linear-softmax, ``[N, F, A]``; ``tasks [N]``: task
    ids; ``env.num_envs`` must be N * E). Actions are drawn with ``generator`` (Gumbel-max on the
    logits); the environment's own randomness (tabular transitions) from ``seed``, which the caller
    makes unique per collection (the env's random streams restart with each trial)."""
    W = weight.detach()
    pol = policy or LINEAR
    N, F = W.shape[0], spec.num_features
    E = episodes_per_task
    if env.num_envs != N * E:
        raise ValueError(f"the env has {env.num_envs} environments, expected N * E = {N} * {E}")
    env.reset(seed=seed)
    obs = env.set_tasks(tasks.to(env.device).repeat_interleave(E))
    alive = torch.ones(N * E, dtype=torch.bool, device=env.device)
    feats, acts, rews, masks, logps = [], [], [], [], []
    for _ in range(spec.max_steps):
        x = features(spec, obs, W.dtype).reshape(N, E, F)
        logits = pol.log_softmax(W, x)
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        a = (logits - torch.log(-torch.log(u.clamp_min(1e-20)))).argmax(-1)
        out = env.step(a.reshape(-1).to(torch.int32))
        m = alive.to(W.dtype)
        feats.append(x)
        acts.append(a)
        rews.append(out.reward.to(W.dtype).reshape(N, E) * m.reshape(N, E))
        masks.append(m.reshape(N, E))
        logps.append(logits.gather(-1, a[..., None])[..., 0])
        alive = alive & ~(out.terminated | out.truncated)
        obs = out.obs
        if not bool(alive.any()):
            break
    stack = lambda xs: torch.stack(xs, dim=2)  # noqa: E731
    return Episodes(stack(feats).contiguous(), stack(acts), stack(rews), stack(masks), stack(logps), policy)


# ---------------------------------------------------------------------------------------------------
# Policies: per-task parameters [N, ...] -> log pi(a | phi)


class Policy:
    """A policy family over features ``phi [F]`` with ``A`` actions; per-task parameters carry a
    leading task dimension ``N``. ``log_softmax(W, x [N, M, F]) -> [N, M, A]`` (for sampling and
    KLs), ``log_prob(W, features [N, E, T, F], actions [N, E, T]) -> [N, E, T]`` (for objectives;
    metakern's fused op) and ``init(generator)``, the meta-parameters theta (no task dimension)."""

    name = "policy"

    def log_softmax(self, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, W: torch.Tensor, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init(self, generator: torch.Generator, device: str | torch.device = "cpu") -> torch.Tensor:
        raise NotImplementedError


class LinearPolicy(Policy):
    """log pi = log_softmax(phi @ W), ``W [N, F, A]``."""

    name = "linear"

    def __init__(self, num_features: int = 0, num_actions: int = 0):
        self.shape = (num_features, num_actions)

    def log_softmax(self, W, x):
        return torch.log_softmax(torch.bmm(x, W), dim=-1)

    def log_prob(self, W, features, actions):
        return linear_softmax_log_prob(W, features, actions)

    def init(self, generator, device="cpu"):
        return torch.zeros(self.shape, device=device)


LINEAR = LinearPolicy()


class MLPPolicy(Policy):
    """A tanh MLP per task, parameters flattened to ``W [N, D]`` (see the module docstring)."""

    name = "mlp"

    def __init__(self, num_features: int, num_actions: int, hidden_size: int, hidden_layers: int):
        if hidden_size < 1 or hidden_layers < 1:
            raise ValueError(f"an mlp policy needs hidden_size, hidden_layers >= 1, got {hidden_size}, {hidden_layers}")
        sizes = [num_features] + [hidden_size + 1] * hidden_layers  # inputs of each layer (+1: the bias)
        outs = [hidden_size] * hidden_layers + [num_actions]
        self.layers = list(zip(sizes, outs, strict=True))
        self.num_params = sum(i * o for i, o in self.layers)
        self.shape = (self.num_params,)

    def _unpack(self, W: torch.Tensor) -> list[torch.Tensor]:
        mats, off = [], 0
        for i, o in self.layers:
            mats.append(W[:, off : off + i * o].reshape(W.shape[0], i, o))
            off += i * o
        return mats

    def _hidden(self, mats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer with a trailing 1, ``[N, M, H + 1]`` for ``x [N, M, F]``."""
        h = x
        for m in mats[:-1]:
            h = torch.tanh(torch.bmm(h, m))
            h = torch.cat((h, h.new_ones((*h.shape[:-1], 1))), dim=-1)
        return h

    def log_softmax(self, W, x):
        mats = self._unpack(W)
        return torch.log_softmax(torch.bmm(self._hidden(mats, x), mats[-1]), dim=-1)

    def log_prob(self, W, features, actions):
        N, E, T, F = features.shape
        mats = self._unpack(W)
        h = self._hidden(mats, features.reshape(N, E * T, F)).reshape(N, E, T, -1)
        return linear_softmax_log_prob(mats[-1].contiguous(), h.contiguous(), actions)

    def init(self, generator, device="cpu"):
        parts = []
        for k, (i, o) in enumerate(self.layers):
            if k + 1 == len(self.layers):
                parts.append(torch.zeros(i * o))
            else:
                parts.append(torch.randn(i, o, generator=generator).mul_(i**-0.5).reshape(-1))
        return torch.cat(parts).to(device)


def make_policy(kind: str, spec: EnvSpec, *, hidden_size: int = 64, hidden_layers: int = 1) -> Policy:
    """The policy family ``kind`` (``POLICIES``) for the env ``spec``."""
    if kind == "linear":
        return LinearPolicy(spec.num_features, spec.num_actions)
    if kind == "mlp":
        return MLPPolicy(spec.num_features, spec.num_actions, hidden_size, hidden_layers)
    raise ValueError(f"policy must be one of {POLICIES}, got {kind!r}")
