"""MAML-RL (Finn et al. 2017) with a choice of meta-gradient estimator per slot, and E-MAML.

One meta-iteration, for a meta-batch of N tasks with per-task policy parameters ``W`` (``rollout``:
``policy="linear"``, linear-softmax over features ``W [N, F, A]``, or ``"mlp"``, a tanh network
per task ``W [N, D]`` read out by the same fused log-prob op):

1. Inner loop, K steps: collect E episodes per task with W_k, then
   ``W_{k+1} = W_k + alpha * grad J_inner(W_k)`` with the graph kept (``create_graph``), so the
   meta-gradient differentiates through the update (a Hessian-vector product of the estimator,
   closed form in metakern's ops). W_0 is the meta-parameter theta, copied per task.
2. Collect E episodes per task with the adapted W_K (the post-update episodes).
3. Outer update of theta from J_outer(W_K(theta)) on the post-update episodes:
   ``vpg`` (Adam on -J_outer), ``ppo`` (``ppo_epochs`` Adam steps on the clipped ratio objective,
   the adaptation re-run from the current theta each epoch on the same pre-update episodes, with
   ``kl_penalty`` eta times KL(pi_theta_old || pi_theta) on the pre-update episodes: ProMP's outer
   objective J^CLIP(theta') - eta KL) or ``trpo`` (natural gradient: conjugate
   gradient on the Fisher-vector product of the post-update KL through the adaptation, then a
   backtracking line search on the ratio surrogate under ``max_kl``).

The slots of Liu et al. 2022 are chosen separately: ``inner_estimator`` gives the value of the
inner step, ``hessian_estimator`` its derivative graph (``W' = stop(W + alpha g_inner) +
(W + alpha g_hess) - stop(W + alpha g_hess)``), ``outer_estimator`` the outer objective (``vpg``
and ``trpo``; ``ppo`` uses the clipped ratio objective). Estimators (``ESTIMATORS``), per episode,
from the metakern estimator ops with G_t the discounted reward-to-go, b_t a leave-one-out
baseline (the mean G_t of the task's other E - 1 episodes at the same step) and A_t = G_t - b_t:

=================  ==========================================================================
``maml``           sum_t gamma^t stop(A_t) log pi_t (REINFORCE; Hessian = ProMP's H2 only)
``dice``           DiCE on the rewards (unbiased Hessian, high variance)
``dice_baseline``  DiCE with Mao et al.'s baseline b
``loaded_dice``    Loaded DiCE(lambda = ``lam``) on A
``lvc``            TayPO-1 = ProMP's LVC / J^LR: sum_t gamma^t (rho_t - 1) stop(A_t), rho the ratio to
                   the sampling policy (so it stays an importance-sampled gradient away from it)
``taypo2``         TayPO-2 (Tang et al. 2021), second-order unbiased on-policy
``dr``             the doubly-robust recursion with V = b (= Loaded DiCE(1) on-policy)
``exact``          (``--env tabular`` only) the exact expected return of the task's MDP over the
                   episode horizon, by dynamic programming, differentiated by autograd
=================  ==========================================================================

E-MAML (``exploration_weight`` lambda > 0; ``emaml.py`` sets it): the outer loss also gets
``-lambda * sum_t log pi_theta(a_t | s_t) (R'_n - mean_n R'_n)`` over the pre-update episodes of
task n, R'_n the mean post-update return of task n (stop-gradient): Stadie et al.'s exploration
term (the REINFORCE gradient of the pre-update sampling distribution, weighted by the post-update
return; spec gridworlds 2.1), with the mean over the meta-batch as its baseline.

Evaluation (``evaluate``) follows the E-MAML protocol on the held-out test tasks: per task,
``eval_explore`` = 3 exploratory episodes with theta, K inner steps from them (the inner
estimator, no graph), then ``eval_exploit`` = 2 episodes with the adapted policy. It reports the
mean return of the exploratory (pre-update) and of the exploit (adapted) episodes, over
``eval_repeats`` independent repeats of the protocol on every test task (the paper averages 64
repeats of its whole experiment).
"""

from __future__ import annotations

import itertools
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import estimators as est
from . import rollout
from .run import Progress, Run, check_bools, check_ints, check_reals

ESTIMATORS = ("maml", "dice", "dice_baseline", "loaded_dice", "lvc", "taypo2", "dr", "exact")
OUTER = ("vpg", "ppo", "trpo")


@dataclass
class MAMLConfig:
    """MAML-RL settings (``metakern train maml``). Defaults: the E-MAML Krazy World protocol where it
    says (32 training tasks per meta-batch drawn from the training pool, 64 test tasks, episodes
    of <= 100 steps, one inner step, 3 + 2 evaluation episodes); the policy (``"mlp"``:
    ``hidden_layers`` tanh layers of ``hidden_size``, or ``"linear"``: linear-softmax) and the step
    sizes are ours, the ones with which Krazy World and mazes learn (docs/RESULTS.md; the linear
    policy's runs there used inner_lr 1 and outer_lr 0.05 or 0.3 and 0.01)."""

    env: str = "krazyworld"
    seed: int = 0
    iterations: int = 100
    meta_batch: int = 32
    episodes_per_task: int = 8
    inner_steps: int = 1
    inner_lr: float = 0.5
    inner_estimator: str = "maml"
    hessian_estimator: str = ""  # empty: the inner estimator's own graph
    outer_estimator: str = "maml"
    outer: str = "vpg"
    outer_lr: float = 0.01
    gamma: float = 0.99
    lam: float = 0.95
    exploration_weight: float = 0.0
    ppo_epochs: int = 5
    clip: float = 0.2
    kl_penalty: float = 0.0
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 0.01
    line_search_steps: int = 10
    eval_every: int = 10
    eval_tasks: int = 64
    eval_explore: int = 3
    eval_exploit: int = 2
    eval_repeats: int = 4
    checkpoint_every: int = 10
    maze_size: int = 10
    krazy_train_tasks: int = 1024
    krazy_permute_ids: bool = False
    policy: str = "mlp"
    hidden_size: int = 64
    hidden_layers: int = 1
    device: str = "cpu"

    def validate(self) -> MAMLConfig:
        spec = rollout.env_spec(self.env, maze_size=self.maze_size, krazy_train_tasks=self.krazy_train_tasks)
        check_ints(self, ("iterations", "meta_batch", "episodes_per_task", "inner_steps", "ppo_epochs", "cg_iters",
                          "line_search_steps", "eval_every", "eval_tasks", "eval_explore", "eval_exploit",
                          "eval_repeats", "checkpoint_every", "hidden_size", "hidden_layers"))  # fmt: skip
        check_bools(self, ("krazy_permute_ids",))
        if self.policy not in rollout.POLICIES:
            raise ValueError(f"policy must be one of {rollout.POLICIES}, got {self.policy!r}")
        if self.meta_batch > spec.num_train_tasks:
            raise ValueError(f"meta_batch must be at most the {spec.num_train_tasks} training tasks of {self.env}")
        if self.eval_tasks > spec.num_test_tasks:
            raise ValueError(f"eval_tasks must be at most the {spec.num_test_tasks} test tasks of {self.env}")
        for name in ("inner_estimator", "outer_estimator") + (("hessian_estimator",) if self.hessian_estimator else ()):
            v = getattr(self, name)
            if v not in ESTIMATORS:
                raise ValueError(f"{name} must be one of {ESTIMATORS}, got {v!r}")
            if v == "exact" and self.env != "tabular":
                raise ValueError(f"{name}='exact' needs --env tabular (the exact value of a known MDP)")
            if v == "exact" and self.policy != "linear":
                raise ValueError(f"{name}='exact' needs --policy linear (a softmax table over the one-hot states)")
        if self.outer not in OUTER:
            raise ValueError(f"outer must be one of {OUTER}, got {self.outer!r}")
        check_reals(self, (("inner_lr", 0.0, math.inf), ("outer_lr", 0.0, math.inf), ("gamma", 0.0, 1.0),
                           ("lam", 0.0, 1.0), ("exploration_weight", 0.0, math.inf), ("clip", 0.0, math.inf),
                           ("kl_penalty", 0.0, math.inf), ("max_kl", 0.0, math.inf),
                           ("cg_damping", 0.0, math.inf)))  # fmt: skip
        if self.episodes_per_task < 2 and "maml" in (self.inner_estimator, self.outer_estimator):
            raise ValueError("episodes_per_task must be >= 2 (the baseline is the mean of the task's other episodes)")
        return self


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------------
# Objectives


class Signals:
    """The per-episode signals of one batch of episodes, flattened to [N*E, T] rows."""

    def __init__(self, ep: rollout.Episodes, gamma: float):
        N, E, T = ep.rewards.shape
        self.shape = (N, E, T)
        G = ep.returns(gamma)
        count = ep.mask.sum(1, keepdim=True)
        others = (count - ep.mask).clamp_min(1)
        b = ((G.sum(1, keepdim=True) - G) / others) * ep.mask  # leave-one-out mean return at step t
        flat = lambda t: t.reshape(N * E, T).contiguous()  # noqa: E731
        self.returns, self.baseline, self.adv = flat(G), flat(b), flat((G - b) * ep.mask)
        self.rewards, self.mask, self.behaviour = flat(ep.rewards), flat(ep.mask), flat(ep.logp)


def tabular_exact_value(mdp, weight: torch.Tensor, horizon: int, gamma: float) -> torch.Tensor:
    """Expected discounted return over ``horizon`` steps from the start distribution, per task [N],
    for tabular policies softmax(weight [N, S, A]): backward dynamic programming, differentiable."""
    pi = torch.softmax(weight.to(torch.float64), -1)
    P, R = mdp.P.to(pi.device), mdp.R.to(pi.device)
    V = torch.zeros(pi.shape[:2], dtype=torch.float64, device=pi.device)
    for _ in range(horizon):
        Q = R + gamma * torch.einsum("nsat,nt->nsa", P, V)
        V = (pi * Q).sum(-1)
    return (mdp.init.to(pi.device) * V).sum(-1).to(weight.dtype)


def objective(kind: str, ep: rollout.Episodes, sig: Signals, weight: torch.Tensor, cfg: MAMLConfig, mdp=None):
    """J(W) per task [N] (mean over the task's episodes) for estimator ``kind``."""
    N, E, T = sig.shape
    if kind == "exact":
        return tabular_exact_value(mdp, weight, rollout.env_spec("tabular").max_steps, cfg.gamma)
    logp = ep.log_prob(weight).reshape(N * E, T)
    g, kw = cfg.gamma, {"reduction": "none"}
    if kind == "maml":
        per = est.maml_surrogate(logp, sig.adv, g, **kw)
    elif kind == "dice":
        per = est.dice(logp, sig.rewards, g, **kw)
    elif kind == "dice_baseline":
        per = est.dice_baseline(logp, sig.rewards, sig.baseline, g, **kw)
    elif kind == "loaded_dice":
        per = est.loaded_dice(logp, sig.adv, g, cfg.lam, **kw)
    elif kind in ("lvc", "taypo2"):
        per = est.taypo(logp, sig.behaviour, sig.returns, sig.baseline, g, 1 if kind == "lvc" else 2, **kw)
    elif kind == "dr":
        per = est.doubly_robust(logp, sig.behaviour, sig.rewards, sig.baseline, g, **kw)
    else:
        raise ValueError(f"unknown estimator {kind!r}")
    return per.reshape(N, E).mean(1)


# ---------------------------------------------------------------------------------------------------
# The algorithm


class MAML:
    """MAML-RL / E-MAML state: meta-parameters, optimiser, envs (see the module docstring)."""

    def __init__(self, config: MAMLConfig):
        self.cfg = cfg = config.validate()
        self.spec = rollout.env_spec(cfg.env, maze_size=cfg.maze_size, krazy_train_tasks=cfg.krazy_train_tasks)
        self.device = torch.device(cfg.device)
        self.policy = rollout.make_policy(cfg.policy, self.spec, hidden_size=cfg.hidden_size,
                                          hidden_layers=cfg.hidden_layers)  # fmt: skip
        init_gen = torch.Generator().manual_seed(_seed(cfg.seed, "init"))
        self.theta = self.policy.init(init_gen, self.device).requires_grad_(True)
        self.opt = torch.optim.Adam([self.theta], lr=cfg.outer_lr)
        E = cfg.episodes_per_task
        mk = lambda split, n: rollout.make_env(  # noqa: E731
            cfg.env, split, n, seed=cfg.seed, device=self.device, maze_size=cfg.maze_size,
            krazy_train_tasks=cfg.krazy_train_tasks, krazy_permute_ids=cfg.krazy_permute_ids,
        )  # fmt: skip
        self.train_env = mk("train", cfg.meta_batch * E)
        n_eval = cfg.eval_tasks * cfg.eval_repeats
        self.eval_envs = (mk("test", n_eval * cfg.eval_explore), mk("test", n_eval * cfg.eval_exploit))
        self.env_steps = 0
        self.iteration = 0
        self._hess = cfg.hessian_estimator or cfg.inner_estimator

    # -- pieces ----------------------------------------------------------------------------------

    def _mdp(self, env, tasks):
        return env.family.mdp(self.cfg.gamma, tasks.cpu()) if self.cfg.env == "tabular" else None

    def adapt(self, W, ep, sig, mdp, *, create_graph: bool):
        """One inner step W + alpha grad J_inner(W) (per task), with the slots' derivative graph."""
        cfg = self.cfg
        if not W.requires_grad:
            W = W.detach().requires_grad_(True)
        same = self._hess == cfg.inner_estimator
        (g,) = torch.autograd.grad(
            objective(cfg.inner_estimator, ep, sig, W, cfg, mdp).sum(), W, create_graph=create_graph and same
        )
        step = cfg.inner_lr * g
        if not create_graph:
            return (W + step).detach()
        if same:
            return W + step
        (gh,) = torch.autograd.grad(objective(self._hess, ep, sig, W, cfg, mdp).sum(), W, create_graph=True)
        hess_step = cfg.inner_lr * gh
        return W + step.detach() + hess_step - hess_step.detach()

    def adapted(self, theta, inner, mdp):
        """W_K(theta) through the K inner steps on the recorded pre-update episodes ``inner``."""
        W = theta.expand(len(inner[0][0].rewards), *theta.shape).contiguous()
        chain = [W]
        for ep, sig in inner:
            W = self.adapt(W, ep, sig, mdp, create_graph=True)
            chain.append(W)
        return W, chain

    def sample(self, envs, tasks, episodes, gen, it, tag, *, create_graph: bool = True):
        """K rounds of (collect ``episodes[0]`` episodes per task on ``envs[0]`` with W_k, inner step),
        then ``episodes[1]`` post-update episodes per task on ``envs[1]`` with W_K. Returns
        ``(inner, chain, post, mdp)``: the inner (episodes, signals), the weights W_0 .. W_K (with
        their graph from theta when ``create_graph``) and the post-update episodes."""
        cfg = self.cfg
        mdp = self._mdp(envs[0], tasks)
        theta = self.theta if create_graph else self.theta.detach()
        W = theta.expand(len(tasks), *theta.shape).contiguous()
        chain, inner = [W], []
        for k in range(cfg.inner_steps):
            ep = rollout.collect(envs[0], self.spec, W, tasks, episodes[0], gen, _seed(cfg.seed, it, tag, k),
                                 self.policy)  # fmt: skip
            sig = Signals(ep, cfg.gamma)
            inner.append((ep, sig))
            with torch.enable_grad():
                W = self.adapt(W, ep, sig, mdp, create_graph=create_graph)
            chain.append(W)
        post = rollout.collect(envs[1], self.spec, W, tasks, episodes[1], gen, _seed(cfg.seed, it, tag, "post"),
                               self.policy)  # fmt: skip
        return inner, chain, post, mdp

    def _emaml_term(self, inner, post, theta):
        """E-MAML's exploration term on the first inner batch (sampled with theta itself)."""
        ep, sig = inner[0]
        N, E, T = sig.shape
        R = post.episode_return().mean(1)
        R = (R - R.mean()).detach()
        logp = ep.log_prob(theta.expand(N, *theta.shape).contiguous()).reshape(N * E, T)
        weights = R.repeat_interleave(E)[:, None] * sig.mask
        return est.e_maml_term(logp, weights, reduction="none").reshape(N, E).mean(1).mean()

    def _kl(self, W_old, W_new, post):
        """Mean KL(pi_old || pi_new) over the valid post-update steps."""
        N, E, T, F = post.features.shape
        x = post.features.reshape(N, E * T, F)
        lo = self.policy.log_softmax(W_old, x)
        ln = self.policy.log_softmax(W_new, x)
        kl = (lo.exp() * (lo - ln)).sum(-1).reshape(N, E, T)
        return (kl * post.mask).sum() / post.mask.sum()

    def _ratio_surrogate(self, W, post, post_sig):
        """Mean over tasks of the importance-ratio surrogate sum_t gamma^t (rho_t - 1) A_t (TayPO-1)."""
        N, E, T = post_sig.shape
        logp = post.log_prob(W).reshape(N * E, T)
        per = est.taypo(logp, post_sig.behaviour, post_sig.returns, post_sig.baseline, self.cfg.gamma, 1,
                        reduction="none")  # fmt: skip
        return per.reshape(N, E).mean(1).mean()

    # -- one meta-iteration ------------------------------------------------------------------------

    def step(self, it: int) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(_seed(cfg.seed, it, "tasks"))
        tasks = torch.randperm(self.spec.num_train_tasks, generator=g)[: cfg.meta_batch].to(self.device)
        gen = torch.Generator(device=self.device).manual_seed(_seed(cfg.seed, it, "train", "actions"))
        envs, episodes = (self.train_env,) * 2, (cfg.episodes_per_task,) * 2
        inner, chain, post, mdp = self.sample(envs, tasks, episodes, gen, it, "train")
        W = chain[-1]
        post_sig = Signals(post, cfg.gamma)
        steps = sum(ep.env_steps for ep, _ in inner) + post.env_steps
        self.env_steps += steps
        row: dict[str, float] = {}
        if cfg.outer == "vpg":
            self.opt.zero_grad(set_to_none=True)
            J = objective(cfg.outer_estimator, post, post_sig, W, cfg, mdp).mean()
            loss = -J
            if cfg.exploration_weight > 0:
                loss = loss - cfg.exploration_weight * self._emaml_term(inner, post, self.theta)
            loss.backward()
            row["grad_norm"] = float(self.theta.grad.norm())
            self.opt.step()
            row["loss"] = float(loss.detach())
        elif cfg.outer == "ppo":
            W_old, theta_old = W.detach(), chain[0].detach()
            for epoch in range(cfg.ppo_epochs):
                if epoch > 0:
                    W, chain = self.adapted(self.theta, inner, mdp)
                self.opt.zero_grad(set_to_none=True)
                loss, kl = self._ppo_loss(W, W_old, post, post_sig)
                if cfg.kl_penalty > 0:
                    loss = loss + cfg.kl_penalty * self._kl(theta_old, chain[0], inner[0][0])
                if cfg.exploration_weight > 0:
                    loss = loss - cfg.exploration_weight * self._emaml_term(inner, post, self.theta)
                loss.backward()
                self.opt.step()
            row["loss"], row["kl"] = float(loss.detach()), float(kl)
        else:
            row.update(self._trpo(chain, inner, post, post_sig, mdp))
        pre_ret = inner[0][0].episode_return().mean()
        row.update(
            pre_return=float(pre_ret),
            post_return=float(post.episode_return().mean()),
            env_steps=float(self.env_steps),
            seconds=time.perf_counter() - t0,
        )
        return row

    def _ppo_loss(self, W, W_old, post, post_sig):
        cfg = self.cfg
        N, E, T = post_sig.shape
        logp = post.log_prob(W).reshape(N * E, T)
        ratio = torch.exp(logp - post_sig.behaviour)
        adv = post_sig.adv
        surr = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv) * post_sig.mask
        J = surr.sum(1).reshape(N, E).mean()
        with torch.no_grad():
            kl = self._kl(W_old, W, post)
        return -J, kl

    def _fvp(self, chain, W_old, post):
        """Fisher-vector product v -> (dW_K/dtheta)^T H_KL (dW_K/dtheta) v + damping v. Each inner
        step's Jacobian I + alpha H_k is symmetric (H_k the Hessian of a scalar), so the Jacobian-vector
        product through the chain is a sequence of per-step vector-Jacobian products: metakern HVPs."""
        W_K = chain[-1].detach().requires_grad_(True)
        (gkl,) = torch.autograd.grad(self._kl(W_old, W_K, post), W_K, create_graph=True)

        def fvp(v: torch.Tensor) -> torch.Tensor:
            u = v.expand_as(chain[0])
            for prev, nxt in itertools.pairwise(chain):
                (u,) = torch.autograd.grad(nxt, prev, u, retain_graph=True)
            (w,) = torch.autograd.grad(gkl, W_K, u, retain_graph=True)
            (z,) = torch.autograd.grad(chain[-1], self.theta, w, retain_graph=True)
            return z + self.cfg.cg_damping * v

        return fvp

    def _trpo(self, chain, inner, post, post_sig, mdp) -> dict[str, float]:
        cfg = self.cfg
        W = chain[-1]
        J = objective(cfg.outer_estimator, post, post_sig, W, cfg, mdp).mean()
        if cfg.exploration_weight > 0:
            J = J + cfg.exploration_weight * self._emaml_term(inner, post, self.theta)
        (grad,) = torch.autograd.grad(J, self.theta, retain_graph=True)
        W_old = W.detach()
        fvp = self._fvp(chain, W_old, post)
        x = _conjugate_gradient(fvp, grad, cfg.cg_iters)
        shs = float((x * fvp(x)).sum())
        step = x * math.sqrt(2 * cfg.max_kl / max(shs, 1e-12))
        expected = float((grad * step).sum())
        old = self.theta.detach().clone()
        with torch.no_grad():
            base = float(self._ratio_surrogate(W_old, post, post_sig))
        accepted, kl, improve = 0.0, 0.0, 0.0
        for k in range(cfg.line_search_steps):
            frac = 0.5**k
            with torch.no_grad():
                self.theta.copy_(old + frac * step)
            with torch.enable_grad():
                W_new, _ = self.adapted(self.theta, inner, mdp)
            with torch.no_grad():
                improve = float(self._ratio_surrogate(W_new, post, post_sig)) - base
                kl = float(self._kl(W_old, W_new, post))
            if kl <= cfg.max_kl and improve > 0:
                accepted = frac
                break
        else:
            with torch.no_grad():
                self.theta.copy_(old)
        return {"loss": -improve, "kl": kl, "step_fraction": accepted, "expected_improvement": expected}

    # -- evaluation (E-MAML protocol) -----------------------------------------------------------

    def evaluate(self, it: int) -> dict[str, float]:
        cfg = self.cfg
        tasks = torch.arange(cfg.eval_tasks, device=self.device).repeat(cfg.eval_repeats)
        gen = torch.Generator(device=self.device).manual_seed(_seed(cfg.seed, it, "eval"))
        episodes = (cfg.eval_explore, cfg.eval_exploit)
        inner, _, exploit, _ = self.sample(self.eval_envs, tasks, episodes, gen, it, "eval", create_graph=False)
        return {
            "eval_pre_return": float(inner[0][0].episode_return().mean()),
            "eval_post_return": float(exploit.episode_return().mean()),
        }

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "theta": self.theta.detach().cpu().clone(),
            "opt": self.opt.state_dict(),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.theta.copy_(state["theta"].to(self.device))
        self.opt.load_state_dict(state["opt"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])


def _conjugate_gradient(Av, b: torch.Tensor, iters: int, tol: float = 1e-10) -> torch.Tensor:
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = float((r * r).sum())
    for _ in range(iters):
        Ap = Av(p)
        alpha = rr / max(float((p * Ap).sum()), 1e-20)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = float((r * r).sum())
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


PLOTS = (("pre_return", "post_return"), ("eval_pre_return", "eval_post_return"), ("loss",))


def train(config: MAMLConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
          name: str = "maml") -> dict[str, float]:  # fmt: skip
    """Meta-train for ``config.iterations`` iterations in the run folder ``run_dir`` (``algos.run``):
    a metrics row per iteration (evaluation columns every ``eval_every``), checkpoints every
    ``checkpoint_every`` and at the end, plots at the end. Returns the last row with evaluation."""
    config.validate()
    run = Run(run_dir, config, resume=resume)
    algo = MAML(config)
    if run.state is not None:
        algo.load_state_dict(run.state)
    bar = Progress(config.iterations, f"{name} {config.env}", start=run.start, enabled=progress)
    last_eval: dict[str, float] = {}
    nan = {"eval_pre_return": math.nan, "eval_post_return": math.nan}
    try:
        for it in range(run.start, config.iterations):
            row = algo.step(it)
            algo.iteration = it + 1
            if it % config.eval_every == 0 or it + 1 == config.iterations:
                with torch.no_grad():
                    last_eval = algo.evaluate(it)
                row.update(last_eval)
            else:
                row.update(nan)
            full = {"iteration": it, **row}
            for k in ("grad_norm", "kl", "step_fraction", "expected_improvement"):
                full.setdefault(k, math.nan)
            run.log({k: full[k] for k in sorted(full, key=_column_order)})
            if algo.iteration % config.checkpoint_every == 0 or algo.iteration == config.iterations:
                run.save(algo.state_dict())
            bar.update(algo.iteration, post=row["post_return"], **({"eval": last_eval["eval_post_return"]}
                                                                   if last_eval else {}))  # fmt: skip
        run.plot(PLOTS, title=f"{name} on {config.env} (seed {config.seed})")
    finally:
        run.close()
    return {"iteration": algo.iteration, "env_steps": algo.env_steps, **last_eval}


_ORDER = ("iteration", "env_steps", "seconds", "pre_return", "post_return", "eval_pre_return", "eval_post_return",
          "loss", "grad_norm", "kl", "step_fraction", "expected_improvement")  # fmt: skip


def _column_order(key: str) -> int:
    return _ORDER.index(key) if key in _ORDER else len(_ORDER)


CONFIG = MAMLConfig
ENVS = rollout.ENVS
