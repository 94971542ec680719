"""Benchmark cases of the softmax-policy log-prob ops (``metakern.policy``).

The parameter-space gradient and Hessian-vector product of the DiCE objective for a tabular
softmax policy at issue 3's size (B=1024 trajectories, T=200, S=20, A=5, float64 whatever
``--dtype`` says, like the issue's target), and for a linear-softmax policy (F=16 features, HVP
in the weight). Rows:

* ``autograd`` (peer, the baseline): log_softmax + gather in plain torch, the reference DiCE
  objective, autograd double backward: what users write today. For the tabular policy this
  gathers from the [S, A] table, so autograd's tape is already O(B*T) (a gather and a
  scatter-add); ``autograd-per-step`` is the other common form, ``log_softmax(theta[states])``
  gathered at the actions (``Categorical(logits=theta[states])``), whose tape is [B, T, A].
* ``cpp`` / ``reference`` / ``triton``: the same objective on the log-probs of
  ``metakern.policy`` (closed-form first and second derivatives of the policy part, the objective
  still differentiated by autograd).
* ``<backend>+fused-dice``: ``metakern.policy`` feeding the fused DiCE op
  (``metakern.estimators.dice``), so neither part keeps an autograd tape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..estimators import reference as est
from ..policy import (
    linear_softmax_log_prob,
    linear_softmax_log_prob_reference,
    tabular_log_prob,
    tabular_log_prob_reference,
)
from .harness import Case, Impl, backends_for, register

B, T, S, A, F = 1024, 200, 20, 5, 16
GAMMA = 0.99
DTYPE = torch.float64


def _fused_dice() -> Callable | None:
    try:
        from ..estimators import dice
    except ImportError:
        return None
    return dice


def _no_fused_dice() -> str | None:
    return None if _fused_dice() is not None else "metakern.estimators.dice (the fused DiCE op) is not available"


def _inputs(device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=DTYPE).to(device)

    return {
        "theta": randn(S, A),
        "states": torch.randint(0, S, (B, T), generator=g).to(device),
        "actions": torch.randint(0, A, (B, T), generator=g).to(device),
        "rewards": randn(B, T),
        "v": randn(S, A),
        "weight": 0.3 * randn(F, A),
        "features": randn(B, T, F),
        "v_weight": randn(F, A),
    }


def _grad_hvp(log_prob: Callable, param: str, fixed: tuple[str, ...], direction: str, objective: Callable):
    """setup: the gradient of objective(l, rewards) w.r.t. inputs[param] and its HVP along direction."""

    def setup(inp):
        def step():
            p = inp[param].detach().requires_grad_()
            l = log_prob(p, *(inp[k] for k in fixed))
            J = objective(l, inp["rewards"], GAMMA)
            (grad,) = torch.autograd.grad(J, p, create_graph=True)
            (hvp,) = torch.autograd.grad((grad * inp[direction]).sum(), p)
            return grad.detach(), hvp

        return step

    return setup


def _fused(*args, **kwargs):
    return _fused_dice()(*args, **kwargs)


def per_step_log_prob(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log_softmax(theta[states])[actions]: the per-step logits form, with a [B, T, A] tape."""
    return torch.log_softmax(theta[states], dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def _rows(device: torch.device, ours: Callable, reference: Callable, param, fixed, direction) -> list[Impl]:
    impls = [
        Impl(b, _grad_hvp(ours, param, fixed, direction, est.dice), backend=b)
        for b in backends_for(device)
        if b != "cuda"  # no CUDA-module kernel: Triton serves CUDA tensors
    ]
    impls += [
        Impl(f"{b}+fused-dice", _grad_hvp(ours, param, fixed, direction, _fused), backend=b, unavailable=_no_fused_dice)
        for b in backends_for(device)
        if b in ("cpp", "triton")
    ]
    impls.append(Impl("autograd", _grad_hvp(reference, param, fixed, direction, est.dice), kind="peer"))
    return impls


@register("policy")
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    device = torch.device(device)
    es = torch.empty((), dtype=DTYPE).element_size()
    common = dict(family="policy", device=device, dtype=DTYPE, items=B * T, baseline="autograd")
    return [
        Case(
            name="tabular_dice.grad+hvp",
            shape=f"B={B},T={T},S={S},A={A}",
            # states, actions (int64) and rewards read; grad and hvp [S, A] written
            bytes_moved=3 * B * T * 8 + 2 * S * A * es,
            make_inputs=lambda: _inputs(device),
            impls=[
                *_rows(device, tabular_log_prob, tabular_log_prob_reference, "theta", ("states", "actions"), "v"),
                Impl(
                    "autograd-per-step",
                    _grad_hvp(per_step_log_prob, "theta", ("states", "actions"), "v", est.dice),
                    kind="peer",
                ),
            ],
            note="HVP of DiCE w.r.t. theta [S, A]",
            **common,
        ),
        Case(
            name="linear_dice.grad+hvp",
            shape=f"B={B},T={T},F={F},A={A}",
            # features, actions and rewards read; grad and hvp [F, A] written
            bytes_moved=(F + 2) * B * T * es + 2 * F * A * es,
            make_inputs=lambda: _inputs(device),
            impls=_rows(
                device,
                linear_softmax_log_prob,
                linear_softmax_log_prob_reference,
                "weight",
                ("features", "actions"),
                "v_weight",
            ),
            note="HVP of DiCE w.r.t. the weight [F, A] of a linear-softmax policy",
            **common,
        ),
    ]
