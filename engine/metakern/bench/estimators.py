"""Benchmark cases of the estimator derivatives (``metakern.estimators.tabular``).

Gradient + Hessian-vector product of the DiCE and Loaded DiCE objectives for a tabular softmax
policy at issue 3's size (B=1024 trajectories, T=200, S=20, A=5, float64): the closed forms, by
the C++ kernel (``cpp``) and by scans and per-state sums (``reference``), against autograd double
backward through the reference objective (``autograd``, the baseline).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..estimators import reference as est
from ..estimators.tabular import tabular_derivatives
from .harness import Case, Impl, register

B, T, S, A = 1024, 200, 20, 5
GAMMA, LAM = 0.99, 0.95


def _inputs(device):
    g = torch.Generator().manual_seed(0)
    return {
        "theta": torch.randn(S, A, generator=g, dtype=torch.float64).to(device),
        "states": torch.randint(0, S, (B, T), generator=g).to(device),
        "actions": torch.randint(0, A, (B, T), generator=g).to(device),
        "signal": torch.randn(B, T, generator=g, dtype=torch.float64).to(device),
        "v": torch.randn(S, A, generator=g, dtype=torch.float64).to(device),
    }


def _closed_form(name, lam):
    def setup(inp):
        return lambda: tabular_derivatives(
            name, inp["theta"], inp["states"], inp["actions"], inp["v"], inp["signal"], GAMMA, lam
        )[1:]

    return setup


def _autograd(name, lam):
    def setup(inp):
        def step():
            theta = inp["theta"].clone().requires_grad_()
            logp = torch.log_softmax(theta, -1)[inp["states"], inp["actions"]]
            if name == "dice":
                J = est.dice(logp, inp["signal"], GAMMA)
            else:
                J = est.loaded_dice(logp, inp["signal"], GAMMA, lam)
            (grad,) = torch.autograd.grad(J, theta, create_graph=True)
            (hvp,) = torch.autograd.grad((grad * inp["v"]).sum(), theta)
            return grad.detach(), hvp

        return step

    return setup


@register("estimators")
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    cases = []
    for name, lam in (("dice", 1.0), ("loaded_dice", LAM)):
        cases.append(
            Case(
                family="estimators",
                name=f"{name}.grad+hvp.tabular",
                shape=f"B={B},T={T},S={S},A={A}",
                device=torch.device(device),
                dtype=torch.float64,
                items=B * T,
                bytes_moved=(4 * B * T) * 8 + 2 * B * T * 8,  # states, actions, signal read; 2 [S, A] out
                make_inputs=lambda: _inputs(device),
                impls=[
                    Impl("cpp", _closed_form(name, lam), backend="cpp"),
                    Impl("reference", _closed_form(name, lam), backend="reference"),
                    Impl("autograd", _autograd(name, lam), kind="peer"),
                ],
                baseline="autograd",
            )
        )
    return cases
