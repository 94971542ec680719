"""Benchmark cases of the scan family: ``linear_scan`` and the returns built on it.

Sizes: B=4096,T=256 (many short rollouts: vectorised envs) and B=64,T=4096 (few long ones), plus
B=8,T=16 for ``linear_scan.fwd`` alone, where the per-call cost dominates: there the public
``metakern.linear_scan`` (which calls the kernel directly when autograd has nothing to record)
and ``torch.ops.metakern.linear_scan`` (through the dispatcher) are separate rows, backend
``<backend>`` and ``<backend>-dispatcher``.

Every metakern backend also has a ``<backend>-time-major`` row: the same data laid out ``[T, B]``
and the op called with ``time_major=True``, the layout the peers below get.

Peers, written here the way RL code computes these today, on time-major ``[T, B]`` buffers (the
layout rollouts are stored in, which makes ``x[t]`` a contiguous row; the transposes are done at
set-up, not timed):

* ``torch-loop``: a Python loop over t of torch ops, collecting the steps with ``torch.stack``
  (linear_scan; with autograd for fwd+bwd) or writing them into a preallocated output
  (discounted returns, v-trace's ``vs - V`` recursion);
* ``cleanrl-loop``: the GAE loop of CleanRL-style PPO implementations
  (``lastgaelam = delta + gamma * lam * nextnonterminal * lastgaelam``).

``bytes_moved`` (the memory floor) counts every input read once and every output written once;
for ``linear_scan.fwd+bwd`` it is the two-pass floor: the forward (read x, a, carry; write y)
plus the backward (read the incoming gradient, a, the saved y and carry; write dx and da).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torch

import metakern

from .harness import Case, Impl, backends_for, register

SHAPES: tuple[tuple[int, int], ...] = ((4096, 256), (64, 4096))
TINY: tuple[int, int] = (8, 16)
GAMMA = 0.99
LAM = 0.95
DONE_PROB = 0.02


def shape_str(B: int, T: int) -> str:
    return f"B={B},T={T}"


def _tm(t: torch.Tensor) -> torch.Tensor:
    """Time-major contiguous copy of a [B, T] tensor."""
    return t.detach().t().contiguous()


def _bm(t: torch.Tensor) -> torch.Tensor:
    """Back to batch-major [B, T] (a view, for comparing outputs)."""
    return t.t()


# --------------------------------------------------------------------------------------------------
# Inputs


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _inputs_scan(B, T, device, dtype, grad: bool) -> dict[str, Any]:
    g = _generator()
    x = torch.randn(B, T, generator=g, dtype=dtype).to(device)
    a = (0.9 + 0.1 * torch.rand(B, T, generator=g, dtype=dtype)).to(device)
    carry = torch.randn(B, generator=g, dtype=dtype).to(device)
    if grad:
        x.requires_grad_()
        a.requires_grad_()
    return {"x": x, "a": a, "carry": carry}


def _inputs_returns(B, T, device, dtype) -> dict[str, Any]:
    g = _generator()
    return {
        "rewards": torch.randn(B, T, generator=g, dtype=dtype).to(device),
        "values": torch.randn(B, T, generator=g, dtype=dtype).to(device),
        # Float dones, as in most PPO code (1.0 - dones is the continuation mask).
        "dones": (torch.rand(B, T, generator=g) < DONE_PROB).to(dtype).to(device),
        "bootstrap": torch.randn(B, generator=g, dtype=dtype).to(device),
        "behaviour_log_probs": (torch.randn(B, T, generator=g, dtype=dtype) * 0.5 - 1.0).to(device),
        "target_log_probs": (torch.randn(B, T, generator=g, dtype=dtype) * 0.5 - 1.0).to(device),
    }


# --------------------------------------------------------------------------------------------------
# Peers


def torch_loop_scan(x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor) -> torch.Tensor:
    """y[t] = a[t] * y[t-1] + x[t] on time-major [T, B] tensors, y[-1] = carry."""
    h = carry
    ys = []
    for t in range(x.shape[0]):
        h = a[t] * h + x[t]
        ys.append(h)
    return torch.stack(ys)


def torch_loop_returns(rewards, dones, bootstrap, gamma: float) -> torch.Tensor:
    """Discounted returns on time-major [T, B] tensors; dones[t] = the episode ended after step t."""
    returns = torch.empty_like(rewards)
    next_return = bootstrap
    for t in reversed(range(rewards.shape[0])):
        next_return = rewards[t] + gamma * (1.0 - dones[t]) * next_return
        returns[t] = next_return
    return returns


def cleanrl_loop_gae(rewards, values, dones, next_value, gamma: float, lam: float):
    """CleanRL-style GAE on time-major [T, B] tensors (dones[t]: the episode ended after step t)."""
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(num_steps)):
        nextvalues = next_value if t == num_steps - 1 else values[t + 1]
        nextnonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * lam * nextnonterminal * lastgaelam
    returns = advantages + values
    return advantages, returns


def torch_loop_vtrace(behaviour_log_probs, target_log_probs, rewards, values, dones, bootstrap, gamma: float):
    """V-trace (rho_bar = c_bar = 1, lambda = 1) on time-major [T, B] tensors, as usually written."""
    rhos = torch.exp(target_log_probs - behaviour_log_probs)
    clipped_rhos = torch.clamp(rhos, max=1.0)
    cs = torch.clamp(rhos, max=1.0)
    discounts = gamma * (1.0 - dones)
    values_t_plus_1 = torch.cat([values[1:], bootstrap[None]], dim=0)
    deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)
    vs_minus_v = torch.empty_like(values)
    acc = torch.zeros_like(bootstrap)
    for t in reversed(range(values.shape[0])):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values
    vs_t_plus_1 = torch.cat([vs[1:], bootstrap[None]], dim=0)
    pg_advantages = clipped_rhos * (rewards + discounts * vs_t_plus_1 - values)
    return vs, pg_advantages, clipped_rhos


# --------------------------------------------------------------------------------------------------
# Implementations


def _backend_impls(
    device: torch.device,
    setup: Callable[[dict], Callable[[], Any]],
    time_major_setup: Callable[[dict], Callable[[], Any]] | None = None,
    canonical: Callable[[Any], Any] | None = None,
) -> list[Impl]:
    """One row per usable backend on batch-major inputs and, given ``time_major_setup``, one
    ``<backend>-time-major`` row on the same data laid out [T, B] (the layout the peers get)."""
    impls = [Impl(b, setup, backend=b) for b in backends_for(device)]
    if time_major_setup is not None:
        impls += [
            Impl(f"{b}-time-major", time_major_setup, backend=b, canonical=canonical) for b in backends_for(device)
        ]
    return impls


def _scan_fwd_tm(inp):
    return partial(metakern.linear_scan, _tm(inp["x"]), _tm(inp["a"]), inp["carry"], time_major=True)


def _scan_fwd_bwd_tm(inp):
    x = _tm(inp["x"]).requires_grad_()
    a = _tm(inp["a"]).requires_grad_()
    carry = inp["carry"]

    def step():
        y = metakern.linear_scan(x, a, carry, time_major=True)
        return torch.autograd.grad(y.sum(), (x, a))

    return step


def _returns_tm(inp):
    return partial(
        metakern.discounted_returns,
        _tm(inp["rewards"]),
        GAMMA,
        dones=_tm(inp["dones"]),
        bootstrap=inp["bootstrap"],
        time_major=True,
    )


def _gae_tm(inp):
    return partial(
        metakern.gae,
        _tm(inp["rewards"]),
        _tm(inp["values"]),
        GAMMA,
        LAM,
        dones=_tm(inp["dones"]),
        bootstrap=inp["bootstrap"],
        time_major=True,
    )


def _vtrace_tm(inp):
    names = ("behaviour_log_probs", "target_log_probs", "rewards", "values")
    return partial(
        metakern.vtrace,
        *(_tm(inp[n]) for n in names),
        GAMMA,
        dones=_tm(inp["dones"]),
        bootstrap=inp["bootstrap"],
        time_major=True,
    )


def _scan_fwd(inp):
    return partial(metakern.linear_scan, inp["x"], inp["a"], inp["carry"])


def _scan_dispatcher(inp):
    return partial(torch.ops.metakern.linear_scan, inp["x"], inp["a"], inp["carry"], False)


def _scan_fwd_peer(inp):
    x, a, carry = _tm(inp["x"]), _tm(inp["a"]), inp["carry"]
    return partial(torch_loop_scan, x, a, carry)


def _scan_fwd_bwd(inp):
    x, a, carry = inp["x"], inp["a"], inp["carry"]

    def step():
        y = metakern.linear_scan(x, a, carry)
        return torch.autograd.grad(y.sum(), (x, a))

    return step


def _scan_fwd_bwd_peer(inp):
    x = _tm(inp["x"]).requires_grad_()
    a = _tm(inp["a"]).requires_grad_()
    carry = inp["carry"]

    def step():
        y = torch_loop_scan(x, a, carry)
        return torch.autograd.grad(y.sum(), (x, a))

    return step


def _returns(inp):
    return partial(metakern.discounted_returns, inp["rewards"], GAMMA, dones=inp["dones"], bootstrap=inp["bootstrap"])


def _returns_peer(inp):
    return partial(torch_loop_returns, _tm(inp["rewards"]), _tm(inp["dones"]), inp["bootstrap"], GAMMA)


def _gae(inp):
    return partial(
        metakern.gae, inp["rewards"], inp["values"], GAMMA, LAM, dones=inp["dones"], bootstrap=inp["bootstrap"]
    )


def _gae_peer(inp):
    return partial(
        cleanrl_loop_gae, _tm(inp["rewards"]), _tm(inp["values"]), _tm(inp["dones"]), inp["bootstrap"], GAMMA, LAM
    )


def _vtrace(inp):
    return partial(
        metakern.vtrace,
        inp["behaviour_log_probs"],
        inp["target_log_probs"],
        inp["rewards"],
        inp["values"],
        GAMMA,
        dones=inp["dones"],
        bootstrap=inp["bootstrap"],
    )


def _vtrace_peer(inp):
    names = ("behaviour_log_probs", "target_log_probs", "rewards", "values", "dones")
    return partial(torch_loop_vtrace, *(_tm(inp[n]) for n in names), inp["bootstrap"], GAMMA)


def _canon_tuple(out):
    return tuple(_bm(t) for t in out)


# --------------------------------------------------------------------------------------------------
# Cases


def scan_cases(
    device: torch.device | str,
    dtype: torch.dtype,
    shapes: Sequence[tuple[int, int]] = SHAPES,
    tiny: tuple[int, int] | None = TINY,
) -> list[Case]:
    """The scan family's cases; ``shapes`` and ``tiny`` are parameters so tests can shrink them."""
    device = torch.device(device)
    es = torch.empty((), dtype=dtype).element_size()
    cases: list[Case] = []

    def case(name, B, T, elems_moved, make_inputs, impls, note=""):
        cases.append(
            Case(
                family="scan",
                name=name,
                shape=shape_str(B, T),
                device=device,
                dtype=dtype,
                items=B * T,
                bytes_moved=elems_moved * es,
                make_inputs=make_inputs,
                impls=impls,
                note=note,
            )
        )

    if tiny is not None:
        B, T = tiny
        impls = _backend_impls(device, _scan_fwd)
        impls += [
            Impl(f"{b}-dispatcher", _scan_dispatcher, backend=b) for b in backends_for(device) if b != "reference"
        ]
        impls.append(Impl("torch-loop", _scan_fwd_peer, kind="peer", canonical=_bm))
        case(
            "linear_scan.fwd",
            B,
            T,
            3 * B * T + B,
            partial(_inputs_scan, B, T, device, dtype, False),
            impls,
            "per-call overhead: public wrapper vs dispatcher",
        )

    for B, T in shapes:
        BT = B * T
        scan_in = partial(_inputs_scan, B, T, device, dtype, False)
        scan_grad_in = partial(_inputs_scan, B, T, device, dtype, True)
        returns_in = partial(_inputs_returns, B, T, device, dtype)
        case(
            "linear_scan.fwd",
            B,
            T,
            3 * BT + B,
            scan_in,
            [
                *_backend_impls(device, _scan_fwd, _scan_fwd_tm, _bm),
                Impl("torch-loop", _scan_fwd_peer, kind="peer", canonical=_bm),
            ],
        )
        case(
            "linear_scan.fwd+bwd",
            B,
            T,
            8 * BT + 2 * B,
            scan_grad_in,
            [
                *_backend_impls(device, _scan_fwd_bwd, _scan_fwd_bwd_tm, _canon_tuple),
                Impl("torch-loop", _scan_fwd_bwd_peer, kind="peer", canonical=_canon_tuple),
            ],
        )
        case(
            "discounted_returns.fwd",
            B,
            T,
            3 * BT + B,
            returns_in,
            [
                *_backend_impls(device, _returns, _returns_tm, _bm),
                Impl("torch-loop", _returns_peer, kind="peer", canonical=_bm),
            ],
        )
        case(
            "gae.fwd",
            B,
            T,
            5 * BT + B,
            returns_in,
            [
                *_backend_impls(device, _gae, _gae_tm, _canon_tuple),
                Impl("cleanrl-loop", _gae_peer, kind="peer", canonical=_canon_tuple),
            ],
        )
        case(
            "vtrace.fwd",
            B,
            T,
            8 * BT + B,
            returns_in,
            [
                *_backend_impls(device, _vtrace, _vtrace_tm, _canon_tuple),
                Impl("torch-loop", _vtrace_peer, kind="peer", canonical=_canon_tuple),
            ],
        )
    return cases


@register("scan")
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    return scan_cases(device, dtype)
