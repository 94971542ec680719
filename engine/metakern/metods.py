"""``MetODSPolicy``: a meta-RL actor-critic whose memory is one layer of MetODS dynamic synapses.

The model of Chalvidal et al. (NeurIPS 2022), Algorithm 1, on the fused op of
``metakern.ops.synapse``. Per environment b and step t:

    v^(0) = tanh(Linear(concat(obs_t, onehot(a_{t-1}) or a_{t-1}, r_{t-1})))     # f, [N]
    (v^(S), W_t) = S inner read/write steps of the synapses W_{t-1}              # the op
    logits_t (or Gaussian mean_t), value_t = Linear(v^(S)), Linear(v^(S))         # g

    inner step s = 1..S (W^(0) = W_{t-1}, W_t = W^(S)):
    v^(s) = sum_{l<s} kappa[s-1, l] v^(l) + kappa[s-1, s] sigma(W^(s-1) v^(s-1))
    W^(s) = sum_{l<s} beta[s-1, l] W^(l)  + beta[s-1, s] alpha * (v^(s-1) v^(s-1)^T)

Meta-parameters (trained by the outer loop): f, g, alpha [N, N] (per-synapse plasticity),
kappa and beta [S, S+1] (row s-1 holds inner step s's coefficients; columns l > s are unused and
get zero gradient), optionally W0 and, for continuous actions, a state-independent log-std.
The synaptic state W [B, N, N] (float32; float64 for a float64 module) is carried through a
rollout and returns to W0 where an episode (or trial) starts.

Initial values, and why:

* ``kappa[s-1, s-1] = 1`` (residual) and ``kappa[s-1, s] = 1`` (read), others 0:
  v^(s) = v^(s-1) + sigma(W^(s-1) v^(s-1)). Every inner step has an identity path for gradients,
  and the model starts near the feed-forward policy g(f(x)), a known-good starting point: with
  the default W0 = 0 the reads see only what has been written (scaled by the small alpha; with
  S = 1 the first step is exactly g(f(x))), and they add to the residual path as W fills up.
* ``beta[s-1, s-1] = lam``, ``beta[s-1, s] = 1 - lam`` with ``lam = decay ** (1 / S)``, others 0:
  each inner write is a convex combination W^(s) = lam W^(s-1) + (1 - lam) alpha * v v^T, so
  W_t = decay * W_{t-1} + alpha * (a weighted sum of S outer products with weights summing to
  1 - decay). gamma_S = decay < 1: W is a leaky average of Hebbian writes and stays bounded,
  |W_ij| <= max(|W0_ij|, |alpha_ij| max |v|^2), whatever the rollout length; its memory time
  scale is 1 / (1 - decay) steps (20 at the default 0.95).
* ``alpha ~ N(0, alpha_std^2)`` with ``alpha_std = 1 / sqrt(N)`` by default: zero mean, so
  training picks Hebbian (> 0) or anti-Hebbian (< 0) synapses, and small, so the read-back of a
  write, (alpha * v v^T) u = v * (alpha (v * u)), has the size of v rather than sqrt(N) times it.
  With ``learn_alpha=False`` (the paper's "no trainable alpha" ablation) this draw is a fixed
  buffer; fill it with a constant (``policy.alpha.fill_(c)``) for plain Hebbian plasticity.
* ``W0 = 0`` (``w0_init="zeros"``) or ``N(0, w0_std^2 / N)`` (``"normal"``), fixed unless
  ``learn_w0=True`` ("W0 can be learnt, fixed a priori or sampled", paper §3).
* f and g are PyTorch's default ``nn.Linear`` inits; ``log_std`` starts at ``log_std_init``.

Acting calls ``forward`` once per environment step (one ``metods_step`` kernel call); training
calls ``forward_sequence`` on whole rollouts (one ``metods_synapse`` call: the fused forward, and
a backward that keeps 2*S*N values per step instead of every W). Both compute the same numbers.

Example::

    import torch
    from metakern.metods import MetODSPolicy

    policy = MetODSPolicy(obs_dim=9, num_actions=4, hidden=64, inner_steps=2)
    B = 16
    state = policy.initial_state(B)
    prev_a = torch.full((B,), -1)                 # -1: no previous action (zero one-hot)
    prev_r = torch.zeros(B)
    for t in range(T):                            # obs [B, 9], episode_start [B] bool from the env
        with torch.no_grad():                     # acting: one kernel call per step
            out = policy(obs, prev_a, prev_r, state, reset=episode_start)
        action = policy.distribution(out).sample()
        state = out.state
        obs, prev_r, episode_start = env.step(action); prev_a = action   # (store the rollout)
    # training on the stored rollout ([B, T] leading dims) in one fused call:
    out = policy.forward_sequence(obs_seq, prev_a_seq, prev_r_seq, reset=starts_seq)
    dist = policy.distribution(out)
    loss = -(dist.log_prob(actions) * advantages).mean() + 0.5 * (out.value - returns).pow(2).mean()
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from .ops.synapse import MAX_S, metods_step, metods_synapse
from .ops.synapse_reference import ACTIVATIONS

__all__ = ["MetODSOutput", "MetODSPolicy"]


class MetODSOutput(NamedTuple):
    """What ``MetODSPolicy`` returns. Discrete policies fill ``logits``, continuous ones ``mean``
    and ``log_std`` (the others are None). Leading dims are [B] from ``forward`` and [B, T] from
    ``forward_sequence``; ``state`` is the synaptic matrix W [B, N, N] after the last step."""

    logits: torch.Tensor | None
    mean: torch.Tensor | None
    log_std: torch.Tensor | None
    value: torch.Tensor
    state: torch.Tensor


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def _tensor(name: str, t: object, shape: tuple[int, ...], layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {layout} = {shape}, got {tuple(t.shape)}")
    if t.is_complex():
        raise TypeError(f"{name}: expected a real tensor, got {t.dtype}")
    return t


def _flags(name: str, t: object, shape: tuple[int, ...], layout: str) -> torch.Tensor:
    """Episode-start flags as a bool tensor; bool or 0/1 integer tensors are accepted."""
    t = _tensor(name, t, shape, layout)
    if t.dtype == torch.bool:
        return t
    if t.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a bool (or 0/1 integer) tensor, got {t.dtype}")
    lo, hi = (int(x) for x in torch.aminmax(t))
    if lo < 0 or hi > 1:
        raise ValueError(f"{name}: expected 0/1 flags, got values in [{lo}, {hi}]")
    return t != 0


class MetODSPolicy(nn.Module):
    """Actor-critic with one layer of MetODS dynamic synapses (see the module docstring).

    Args:
        obs_dim: size of an observation vector.
        num_actions: number of discrete actions (Categorical policy from logits). Exactly one of
            ``num_actions`` and ``action_dim`` is given.
        action_dim: size of a continuous action (diagonal Gaussian: a mean from g and a learned,
            state-independent log-std).
        hidden: N, the number of neurons (W is N x N).
        inner_steps: S, read/write steps per environment step (1..16).
        activation: sigma of the synaptic read: "tanh" (default), "relu" or "identity".
        learn_alpha: train alpha (default); False keeps it a fixed buffer.
        learn_w0: train W0; default False keeps it a fixed buffer.
        w0_init: "zeros" (default) or "normal" (N(0, w0_std^2 / N) entries).
        w0_std: scale of the "normal" W0.
        alpha_std: std of alpha's init (default 1 / sqrt(N)).
        decay: gamma_S, the per-step decay of W at init (0 < decay <= 1; see module docstring).
        log_std_init: initial log-std of a continuous policy.
        checkpoint_every: passed to ``metods_synapse`` by ``forward_sequence`` (save W every C steps
            for the backward; None saves only W0).
        validate_args: check action values and reset flags (each check reads the tensor back to
            the host, a device sync on GPU); shapes and dtypes are always checked.
        device, dtype: where and in which floating dtype the parameters are created.

    Inputs (B environments, T steps):
        obs [B, obs_dim] / [B, T, obs_dim] floating (cast to the module's dtype);
        prev_action: discrete [B] / [B, T] integer in [-1, num_actions), -1 meaning "none" (a zero
        one-hot, for the first step of a trial); continuous [B, action_dim] / [B, T, action_dim];
        prev_reward [B] / [B, T] real; state W [B, N, N] in the module's dtype;
        reset [B] / [B, T] bool: where set, W returns to W0 before that step.
    """

    def __init__(
        self,
        obs_dim: int,
        num_actions: int | None = None,
        *,
        action_dim: int | None = None,
        hidden: int = 64,
        inner_steps: int = 2,
        activation: str = "tanh",
        learn_alpha: bool = True,
        learn_w0: bool = False,
        w0_init: str = "zeros",
        w0_std: float = 1.0,
        alpha_std: float | None = None,
        decay: float = 0.95,
        log_std_init: float = 0.0,
        checkpoint_every: int | None = None,
        validate_args: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim = _positive_int("obs_dim", obs_dim)
        if (num_actions is None) == (action_dim is None):
            raise ValueError(
                "MetODSPolicy: give exactly one of num_actions (discrete actions) and action_dim (continuous actions), "
                f"got num_actions={num_actions!r}, action_dim={action_dim!r}"
            )
        self.discrete = num_actions is not None
        self.num_actions = _positive_int("num_actions", num_actions) if self.discrete else None
        self.action_dim = _positive_int("action_dim", action_dim) if not self.discrete else None
        self.hidden = N = _positive_int("hidden", hidden)
        self.inner_steps = S = _positive_int("inner_steps", inner_steps)
        if S > MAX_S:
            raise ValueError(f"inner_steps: expected at most {MAX_S}, got {S}")
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        if w0_init not in ("zeros", "normal"):
            raise ValueError(f"w0_init: expected 'zeros' or 'normal', got {w0_init!r}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay <= 1.0:
            raise ValueError(f"decay: expected a number in (0, 1], got {decay!r}")
        if checkpoint_every is not None:
            _positive_int("checkpoint_every", checkpoint_every)
        self.checkpoint_every = checkpoint_every
        self.learn_alpha = bool(learn_alpha)
        self.learn_w0 = bool(learn_w0)
        self.validate_args = bool(validate_args)
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
        factory = {"device": device, "dtype": dtype}

        in_action = self.num_actions if self.discrete else self.action_dim
        self.embed = nn.Linear(self.obs_dim + in_action + 1, N, **factory)  # f (followed by tanh)
        self.policy_head = nn.Linear(N, in_action, **factory)  # g: logits or Gaussian mean
        self.value_head = nn.Linear(N, 1, **factory)  # g: value
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((self.action_dim,), float(log_std_init), **factory))
        else:
            self.register_parameter("log_std", None)

        wdtype = self.embed.weight.dtype
        kw = {"device": self.embed.weight.device, "dtype": wdtype}
        std = 1.0 / math.sqrt(N) if alpha_std is None else float(alpha_std)
        alpha = torch.randn(N, N, **kw) * std
        lam = float(decay) ** (1.0 / S)
        kappa = torch.zeros(S, S + 1, **kw)
        beta = torch.zeros(S, S + 1, **kw)
        for s in range(1, S + 1):
            kappa[s - 1, s - 1] = 1.0
            kappa[s - 1, s] = 1.0
            beta[s - 1, s - 1] = lam
            beta[s - 1, s] = 1.0 - lam
        w0 = torch.zeros(N, N, **kw) if w0_init == "zeros" else torch.randn(N, N, **kw) * (w0_std / math.sqrt(N))
        self.kappa = nn.Parameter(kappa)
        self.beta = nn.Parameter(beta)
        if self.learn_alpha:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)
        if self.learn_w0:
            self.w0 = nn.Parameter(w0)
        else:
            self.register_buffer("w0", w0)

    def extra_repr(self) -> str:
        act = f"num_actions={self.num_actions}" if self.discrete else f"action_dim={self.action_dim}"
        return (
            f"obs_dim={self.obs_dim}, {act}, hidden={self.hidden}, inner_steps={self.inner_steps}, "
            f"activation={self.activation!r}, learn_alpha={self.learn_alpha}, learn_w0={self.learn_w0}"
        )

    # ----------------------------------------------------------------------------------------------
    # State

    @property
    def state_dtype(self) -> torch.dtype:
        """The dtype of W (the module's parameter dtype: float32 unless the module was made float64)."""
        return self.w0.dtype

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """W0 for ``batch_size`` environments: [B, N, N] in ``state_dtype`` (a copy; connected to
        W0 for autograd when W0 is learned)."""
        B = _positive_int("batch_size", batch_size)
        w0 = self.w0 if device is None else self.w0.to(device)
        return w0.expand(B, self.hidden, self.hidden).contiguous()

    # ----------------------------------------------------------------------------------------------
    # Shared pieces

    def _v0(self, obs, prev_action, prev_reward, lead: tuple[int, ...]) -> torch.Tensor:
        """f: validate the per-step inputs and embed them into v^(0) [*lead, N]."""
        axes = "[B]" if len(lead) == 1 else "[B, T]"
        dev = self.embed.weight.device
        dt = self.embed.weight.dtype
        obs = _tensor("obs", obs, (*lead, self.obs_dim), f"{axes[:-1]}, obs_dim]")
        action_shape, action_axes = (
            (lead, axes) if self.discrete else ((*lead, self.action_dim), f"{axes[:-1]}, action_dim]")
        )
        prev_action = _tensor("prev_action", prev_action, action_shape, action_axes)
        prev_reward = _tensor("prev_reward", prev_reward, lead, axes)
        for name, t in (("obs", obs), ("prev_action", prev_action), ("prev_reward", prev_reward)):
            if t.device != dev:
                raise ValueError(f"{name}: expected a tensor on {dev} (the module's device), got {t.device}")
        if not obs.dtype.is_floating_point:
            raise TypeError(f"obs: expected a floating tensor, got {obs.dtype}; convert it (e.g. obs.float()) first")
        if self.discrete:
            if prev_action.dtype.is_floating_point or prev_action.dtype == torch.bool:
                raise TypeError(
                    f"prev_action: expected an integer tensor of action indices (-1 for none), got {prev_action.dtype}"
                )
            if self.validate_args:
                lo, hi = (int(x) for x in torch.aminmax(prev_action))
                if lo < -1 or hi >= self.num_actions:
                    raise ValueError(
                        f"prev_action: expected indices in [-1, {self.num_actions}) (-1: no previous action), "
                        f"got values in [{lo}, {hi}]"
                    )
        elif not prev_action.dtype.is_floating_point:
            raise TypeError(f"prev_action: expected a floating tensor of continuous actions, got {prev_action.dtype}")
        if self.discrete:
            action_in = (prev_action.unsqueeze(-1) == torch.arange(self.num_actions, device=dev)).to(dt)
        else:
            action_in = prev_action.to(dt)
        x = torch.cat([obs.to(dt), action_in, prev_reward.to(dt).unsqueeze(-1)], dim=-1)
        return torch.tanh(self.embed(x))

    def _state(self, state: object, B: int) -> torch.Tensor:
        N = self.hidden
        state = _tensor("state", state, (B, N, N), "[B, N, N]")
        if state.dtype != self.state_dtype:
            raise TypeError(f"state: expected dtype {self.state_dtype} (the module's state dtype), got {state.dtype}")
        if state.device != self.w0.device:
            raise ValueError(f"state: expected a tensor on {self.w0.device} (the module's device), got {state.device}")
        return state.contiguous()

    def _readout(self, h: torch.Tensor, state: torch.Tensor) -> MetODSOutput:
        """g: action-distribution parameters and value from v^(S)."""
        value = self.value_head(h).squeeze(-1)
        head = self.policy_head(h)
        if self.discrete:
            return MetODSOutput(head, None, None, value, state)
        return MetODSOutput(None, head, self.log_std.expand_as(head), value, state)

    def distribution(self, out: MetODSOutput) -> Distribution:
        """The action distribution of an output: ``Categorical(logits=out.logits)`` for discrete
        actions, ``Independent(Normal(out.mean, exp(out.log_std)), 1)`` for continuous ones (so
        ``log_prob`` sums over the action dims and has shape [B] or [B, T])."""
        if not isinstance(out, MetODSOutput):
            raise TypeError(f"out: expected a MetODSOutput, got {type(out).__name__}")
        if self.discrete:
            return Categorical(logits=out.logits)
        return Independent(Normal(out.mean, out.log_std.exp()), 1)

    # ----------------------------------------------------------------------------------------------
    # Acting: one step

    def forward(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        state: torch.Tensor | None = None,
        reset: torch.Tensor | None = None,
    ) -> MetODSOutput:
        """One environment step for B environments (one ``metods_step`` kernel call).

        obs [B, obs_dim]; prev_action [B] integer (-1: none) or [B, action_dim]; prev_reward [B];
        state W [B, N, N] from ``initial_state`` or the previous call (None: W0); reset [B] bool
        (W returns to W0 before this step where set). Returns ``MetODSOutput`` with logits
        [B, num_actions] (or mean/log_std [B, action_dim]), value [B] and the new state."""
        if not isinstance(obs, torch.Tensor):
            raise TypeError(f"obs: expected a torch.Tensor, got {type(obs).__name__}")
        if obs.dim() != 2:
            raise ValueError(
                f"obs: expected shape [B, obs_dim] (use forward_sequence for [B, T, obs_dim]), got {tuple(obs.shape)}"
            )
        B = obs.shape[0]
        if B == 0:
            raise ValueError("obs: expected at least one environment, got B = 0")
        v0 = self._v0(obs, prev_action, prev_reward, (B,))
        W = self.initial_state(B) if state is None else self._state(state, B)
        if reset is not None:
            flags = _flags("reset", reset, (B,), "[B]")
            if flags.device != W.device:
                raise ValueError(f"reset: expected a tensor on {W.device} (the module's device), got {flags.device}")
            W = torch.where(flags.reshape(B, 1, 1), self.w0, W)
        h, W = metods_step(v0, W, self.alpha, self.kappa, self.beta, activation=self.activation)
        return self._readout(h, W)

    # ----------------------------------------------------------------------------------------------
    # Training: whole sequences

    def forward_sequence(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        reset: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> MetODSOutput:
        """T steps of B environments with the fused op; equal to T calls of ``forward``.

        obs [B, T, obs_dim]; prev_action [B, T] integer (-1: none) or [B, T, action_dim];
        prev_reward [B, T]; reset [B, T] bool or None (W returns to W0 before step t where set);
        state [B, N, N]: W carried from a previous chunk (truncated BPTT: detach it; full BPTT
        across chunks: keep its graph), or None to start from W0. Returns ``MetODSOutput`` with a
        T axis (logits [B, T, A] or mean/log_std [B, T, action_dim], value [B, T]) and W after the
        last step.

        Without ``state``, or without resets, this is one ``metods_synapse`` call. With both, the
        op cannot start from ``state`` and also reset to the learned/fixed W0 (its resets return
        to its initial matrix), so rows are split at their first reset r_b: one call from
        ``state`` over steps [0, max r_b) for the rows with r_b > 0, and one from W0, with the
        resets, over steps [min r_b, T) for the rows that reset; each step's output is taken from
        the call that is exact for it (before r_b: the first; from r_b on: the second, whose
        steps before r_b are wiped by the reset at r_b). At most 2x the steps, still exact, and
        gradients flow to ``state`` and W0 alike.
        """
        if not isinstance(obs, torch.Tensor):
            raise TypeError(f"obs: expected a torch.Tensor, got {type(obs).__name__}")
        if obs.dim() != 3:
            raise ValueError(
                f"obs: expected shape [B, T, obs_dim] (use forward for one step [B, obs_dim]), got {tuple(obs.shape)}"
            )
        B, T = obs.shape[:2]
        if B == 0 or T == 0:
            raise ValueError(f"obs: expected B >= 1 and T >= 1, got shape {tuple(obs.shape)}")
        v0 = self._v0(obs, prev_action, prev_reward, (B, T))
        flags = None
        if reset is not None:
            flags = _flags("reset", reset, (B, T), "[B, T]")
            if flags.device != v0.device:
                raise ValueError(f"reset: expected a tensor on {v0.device} (the module's device), got {flags.device}")
        W = None if state is None else self._state(state, B)
        h, WT = self._synapses(v0, W, flags)
        return self._readout(h, WT)

    def _op(self, v0, W0, reset):
        return metods_synapse(
            v0, W0, self.alpha, self.kappa, self.beta, reset,
            activation=self.activation, checkpoint_every=self.checkpoint_every,
        )  # fmt: skip

    def _synapses(self, v0: torch.Tensor, state: torch.Tensor | None, reset: torch.Tensor | None):
        """(v^(S) [B, T, N], W_T [B, N, N]) from W0 (state None) or from ``state``, with resets to W0."""
        B, T, N = v0.shape
        if state is None:
            vS, WT = self._op(v0, self.w0, reset)
            return vS, WT
        if reset is None or not bool(reset.any()):
            return self._op(v0, state, None)
        # First reset of each row (T where none): steps before it run from `state`, the rest from W0.
        steps = torch.arange(T, device=v0.device)
        first = torch.where(reset, steps, T).amin(dim=1)  # [B]
        rows1 = (first > 0).nonzero().squeeze(1)
        rows2 = (first < T).nonzero().squeeze(1)
        out = v0.new_zeros(B, T, N)
        WT = state.new_zeros(B, N, N)
        if rows1.numel() > 0:
            R = int(first[rows1].max())
            vS1, WT1 = self._op(v0[rows1, :R].contiguous(), state[rows1], None)
            out = out.index_copy(0, rows1, nn.functional.pad(vS1, (0, 0, 0, T - R)))
            WT = WT.index_copy(0, rows1, WT1)
        start = int(first[rows2].min())
        vS2, WT2 = self._op(v0[rows2, start:].contiguous(), self.w0, reset[rows2, start:].contiguous())
        fresh = v0.new_zeros(B, T, N).index_copy(0, rows2, nn.functional.pad(vS2, (0, 0, start, 0)))
        out = torch.where((steps.unsqueeze(0) >= first.unsqueeze(1)).unsqueeze(-1), fresh, out)
        WT = WT.index_copy(0, rows2, WT2)
        return out, WT
