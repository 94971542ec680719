"""Benchmark cases of the exact tabular oracle (``metakern.oracle``).

``maml_meta_gradient``: exact K-step MAML meta-gradients for a batch of random MDPs (the sizes of
the gradient-bias study: S=20, A=5, gamma=0.8), by the closed-form reverse pass of exact HVPs
(``oracle``) against the usual way to get them, differentiating through K unrolled exact solves
with ``torch.func`` (``torch.func-unrolled``, the baseline). ``hvp``: one exact Hessian-vector
product (torch linear algebra, ``oracle``) against ``torch.func`` forward-over-reverse through
the solve. float64 regardless of
``--dtype``: the oracle is a float64 tool. ``bytes_moved`` is reading P and R once and writing
the result once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .. import oracle
from .harness import Case, Impl, register

SIZES: tuple[tuple[int, int, int], ...] = ((1024, 20, 5),)
STEPS = 3
ALPHA = 10.0  # the study's default inner learning rate


def _objective(mdp: oracle.TabularMDP):
    """J(theta) for every task, by a direct solve: what torch.func differentiates."""

    def J(theta: torch.Tensor) -> torch.Tensor:
        pi = torch.softmax(theta, dim=-1)
        P_pi = torch.einsum("bsa,bsat->bst", pi, mdp.P)
        r_pi = (pi * mdp.R).sum(-1)
        eye = torch.eye(mdp.num_states, dtype=theta.dtype, device=theta.device)
        V = torch.linalg.solve(eye - mdp.gamma * P_pi, r_pi)
        return (mdp.init * V).sum(-1)

    return J


def _unrolled_meta_gradient(mdp: oracle.TabularMDP, steps: int, alpha: float):
    J = _objective(mdp)
    grad_J = torch.func.grad(lambda t: J(t).sum())  # tasks are independent: per-task gradients

    def adapted_value(theta0: torch.Tensor) -> torch.Tensor:
        theta = theta0
        for _ in range(steps):
            theta = theta + alpha * grad_J(theta)
        return J(theta).sum()

    return torch.func.grad(adapted_value)


def _inputs(B, S, A, device):
    mdp = oracle.random_mdps(B, S, A, gamma=0.8, seed=0, device=device)
    theta = torch.zeros(B, S, A, dtype=torch.float64, device=device)  # the study's uniform start
    v = torch.randn(B, S, A, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    return {"mdp": mdp, "theta": theta, "v": v}


def _meta_oracle(inp):
    # Only the meta-gradient, as the torch.func baseline returns: theta_0 .. theta_K are not written out.
    return lambda: oracle.maml_meta_gradient(inp["mdp"], inp["theta"], ALPHA, STEPS, return_thetas=False).meta_gradient


def _meta_unrolled(inp):
    fn = _unrolled_meta_gradient(inp["mdp"], STEPS, ALPHA)
    return lambda: fn(inp["theta"])


def _hvp_oracle(inp):
    return lambda: oracle.hvp(inp["mdp"], inp["theta"], inp["v"])


def _hvp_func(inp):
    grad_J = torch.func.grad(lambda t: _objective(inp["mdp"])(t).sum())
    return lambda: torch.func.jvp(grad_J, (inp["theta"],), (inp["v"],))[1]


@register("oracle")
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    cases = []
    for B, S, A in SIZES:
        floor = (B * S * A * S + 2 * B * S * A) * 8
        shape = f"B={B},S={S},A={A}"
        common = dict(family="oracle", shape=shape, device=torch.device(device), dtype=torch.float64, items=B)
        cases.append(
            Case(
                name=f"maml_meta_gradient.K={STEPS}",
                bytes_moved=floor,
                make_inputs=lambda B=B, S=S, A=A: _inputs(B, S, A, device),
                impls=[
                    Impl("cpp", _meta_oracle, backend="cpp"),
                    Impl("reference", _meta_oracle, backend="reference"),
                    Impl("torch.func-unrolled", _meta_unrolled, kind="peer"),
                ],
                baseline="torch.func-unrolled",
                note="items = tasks",
                **common,
            )
        )
        cases.append(
            Case(
                name="hvp",
                bytes_moved=floor,
                make_inputs=lambda B=B, S=S, A=A: _inputs(B, S, A, device),
                impls=[Impl("oracle", _hvp_oracle), Impl("torch.func-jvp", _hvp_func, kind="peer")],
                baseline="torch.func-jvp",
                note="items = tasks",
                **common,
            )
        )
    return cases
