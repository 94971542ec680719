"""End-to-end MAML meta-training throughput on Krazy World (issue 7's target), family ``maml``.

One call = one meta-iteration of MAML-RL (E-MAML settings: N = 32 training tasks (E-MAML's 32
task seeds: each single reference env builds its own task pool), E = 8 episodes
per task, episodes of at most 100 steps, one inner policy-gradient step, outer VPG with Adam;
the linear-softmax policy, inner lr 1, outer lr 0.05: the settings the figures were taken with),
from the same starting parameters every call (theta = 0, the uniform policy, restored with the
optimiser state before each call), so every call does statistically the same work:

* ``cpp`` / ``reference``: ``metakern.algos.maml.MAML.step``: metakern's batched Krazy World
  (C++ kernel, or its numpy reference), the fused linear-softmax log-prob op and the fused
  estimator ops, whose closed-form Hessian-vector products carry the meta-gradient.
* ``gym-sync-autograd`` (the baseline): the loop a PyTorch user writes today, with the same
  hyper-parameters: gymnasium's ``SyncVectorEnv`` of N*E single Krazy World envs (metakern's numpy
  reference env behind ``gymnasium.Env``, same rules and tasks), one policy forward per step,
  returns by a Python loop over time, log-probabilities by ``log_softmax`` + ``gather`` and the
  meta-gradient by autograd double backward (``torch.autograd.grad(create_graph=True)`` through
  the inner step).

Both sample the uniform policy in every call, so episode lengths follow the same distribution;
``items`` (env-steps per call) is the mean over a few set-up iterations of metakern's
implementation, and each implementation's own mean is recorded in its notes by the tests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..algos import maml as maml_algo
from ..algos import rollout
from .harness import Case, Impl, register

FAMILY = "maml"
BASELINE = "gym-sync-autograd"


def bench_config(meta_batch: int = 32, episodes_per_task: int = 8) -> maml_algo.MAMLConfig:
    return maml_algo.MAMLConfig(
        env="krazyworld", meta_batch=meta_batch, episodes_per_task=episodes_per_task, eval_tasks=1, eval_explore=1,
        eval_exploit=1, eval_repeats=1, krazy_train_tasks=32, policy="linear", inner_lr=1.0, outer_lr=0.05,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The reference loop (plain PyTorch + gymnasium)


def reference_objective(feats, actions, rewards, mask, W, gamma):
    """Per-task REINFORCE surrogate with the leave-one-out baseline, in plain torch: feats
    [N, E, T, F], actions/rewards/mask [N, E, T], W [N, F, A] -> [N]."""
    T = feats.shape[2]
    logits = torch.einsum("netf,nfa->neta", feats, W)
    logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None])[..., 0]
    G = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):  # reward-to-go, as cherry's td.discount does: a loop over time
        running = rewards[..., t] + gamma * running
        G[..., t] = running
    G = G * mask
    count = mask.sum(1, keepdim=True)
    b = (G.sum(1, keepdim=True) - G) / (count - mask).clamp_min(1) * mask
    disc = gamma ** torch.arange(T, dtype=feats.dtype)
    return ((disc * (G - b) * mask).detach() * logp).sum(-1).mean(1)


class ReferenceMAML:
    """The plain loop (module docstring): gymnasium SyncVectorEnv + autograd double backward."""

    def __init__(self, cfg: maml_algo.MAMLConfig):
        import gymnasium

        from ..envs import registration

        self.cfg = cfg
        self.spec = rollout.env_spec(cfg.env, krazy_train_tasks=cfg.krazy_train_tasks)
        N, E = cfg.meta_batch, cfg.episodes_per_task

        def env_fn():
            return registration.make_single(
                "metakern/KrazyWorld-v0", backend="reference", obs_view="patch", obs_mode="onehot",
                **rollout.krazy_split("train", cfg.krazy_train_tasks), episodes_per_trial=1, explore_episodes=0,
                max_steps=self.spec.max_steps, permute_colors=cfg.krazy_permute_ids,
            )  # fmt: skip

        self.envs = gymnasium.vector.SyncVectorEnv([env_fn for _ in range(N * E)])
        self.theta = torch.zeros(self.spec.num_features, self.spec.num_actions, requires_grad=True)
        self.opt = torch.optim.Adam([self.theta], lr=cfg.outer_lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.env_steps = 0

    def rollout(self, W: torch.Tensor, tasks: torch.Tensor):
        N, E = self.cfg.meta_batch, self.cfg.episodes_per_task
        for i, env in enumerate(self.envs.envs):
            env.reset(options={"task": int(tasks[i // E])})
        obs, _ = self.envs.reset()
        alive = torch.ones(N * E, dtype=torch.bool)
        feats, acts, rews, masks = [], [], [], []
        for _ in range(self.spec.max_steps):
            x = torch.as_tensor(obs, dtype=torch.float32)
            x = torch.cat((x, torch.ones(N * E, 1)), 1).reshape(N, E, -1)
            probs = torch.softmax(torch.bmm(x, W), -1)
            a = torch.multinomial(probs.reshape(N * E, -1), 1, generator=self.gen)[:, 0]
            obs, r, term, trunc, _ = self.envs.step(a.numpy())
            m = alive.float()
            feats.append(x)
            acts.append(a.reshape(N, E))
            rews.append(torch.as_tensor(r, dtype=torch.float32).reshape(N, E) * m.reshape(N, E))
            masks.append(m.reshape(N, E))
            alive &= ~torch.as_tensor(term | trunc)
            if not alive.any():
                break
        self.env_steps += int(sum(m.sum() for m in masks))
        return tuple(torch.stack(v, 2) for v in (feats, acts, rews, masks))

    def step(self, it: int) -> None:
        cfg = self.cfg
        tasks = torch.randperm(self.spec.num_train_tasks, generator=self.gen)[: cfg.meta_batch]
        W0 = self.theta.expand(cfg.meta_batch, *self.theta.shape)
        pre = self.rollout(W0.detach(), tasks)
        J_in = reference_objective(*pre, W0, cfg.gamma)
        (g,) = torch.autograd.grad(J_in.sum(), W0, create_graph=True)
        W1 = W0 + cfg.inner_lr * g
        post = self.rollout(W1.detach(), tasks)
        loss = -reference_objective(*post, W1, cfg.gamma).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def close(self) -> None:
        self.envs.close()


# --------------------------------------------------------------------------------------------------
# Cases


def _restoring(algo: Any) -> Callable[[], None]:
    """A call of one meta-iteration from the saved starting point (theta and optimiser state)."""
    theta0 = algo.theta.detach().clone()
    opt0 = copy.deepcopy(algo.opt.state_dict())
    counter = [0]

    def run() -> None:
        with torch.no_grad():
            algo.theta.copy_(theta0)
        algo.opt.load_state_dict(opt0)
        algo.step(counter[0])
        counter[0] += 1

    return run


def _ours(inputs: dict[str, Any]) -> Callable[[], None]:
    return _restoring(maml_algo.MAML(inputs["config"]))


def _reference_loop(inputs: dict[str, Any]) -> Callable[[], None]:
    return _restoring(ReferenceMAML(inputs["config"]))


def mean_env_steps(config: maml_algo.MAMLConfig, iterations: int = 3) -> float:
    """Mean env-steps of one meta-iteration from theta = 0 (metakern's implementation)."""
    algo = maml_algo.MAML(config)
    run = _restoring(algo)
    for _ in range(iterations):
        run()
    return algo.env_steps / iterations


def krazyworld_case(meta_batch: int = 32, episodes_per_task: int = 8) -> Case:
    cfg = bench_config(meta_batch, episodes_per_task)
    steps = round(mean_env_steps(cfg))
    return Case(
        family=FAMILY,
        name="krazyworld-meta-iteration",
        shape=f"N={meta_batch},E={episodes_per_task},K=1",
        device=torch.device("cpu"),
        dtype=torch.float32,
        items=steps,
        bytes_moved=steps * (91 * 4 + 16),
        make_inputs=lambda: {"config": cfg},
        impls=[
            Impl("cpp", _ours, backend="cpp"),
            Impl("reference", _ours, backend="reference"),
            Impl(BASELINE, _reference_loop, kind="peer"),
        ],
        note=(
            f"one MAML meta-iteration (inner + outer update) from theta = 0; env-steps/s with {steps} env-steps per "
            "iteration (mean of 3); speed-up vs gymnasium SyncVectorEnv + autograd double backward"
        ),
        baseline=BASELINE,
    )


@register(FAMILY)
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    if device.type != "cpu" or dtype != torch.float32:
        return
    yield krazyworld_case()


__all__ = ["BASELINE", "FAMILY", "ReferenceMAML", "krazyworld_case", "mean_env_steps", "reference_objective"]
