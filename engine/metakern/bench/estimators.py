"""Benchmark cases of the estimator derivatives (``metakern.estimators.tabular``).

Gradient + Hessian-vector product of the DiCE and Loaded DiCE objectives for a tabular softmax
policy at issue 3's size (B=1024 trajectories, T=200, S=20, A=5, float64): the closed forms, by
the C++ kernel (``cpp``) and by scans and per-state sums (``reference``), against autograd double
backward through the reference objective (``autograd``, the baseline: log-probs gathered from one
log_softmax of the table; ``autograd-per-step``: the policy evaluated per step, logits [B, T, A], as
a policy module computes them).

Log-prob space (``*.lspace``): value, gradient and Hessian-vector product of each estimator op on
[B, T] log-probs (J, then autograd.grad with create_graph, then autograd.grad of <g, u>: the calls a
meta-learning inner loop makes), per metakern backend, against the same three calls through the
reference objective (``autograd``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .. import estimators as fused
from ..estimators import reference as est
from ..estimators.tabular import tabular_derivatives
from .harness import Case, Impl, backends_for, register

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


def _autograd(name, lam, per_step=False):
    def setup(inp):
        def step():
            theta = inp["theta"].clone().requires_grad_()
            if per_step:  # the policy evaluated per step, as a policy module does: logits [B, T, A]
                logits = theta[inp["states"]]
                logp = torch.log_softmax(logits, -1).gather(-1, inp["actions"][..., None]).squeeze(-1)
            else:  # one log_softmax of the table, gathered
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
    return [*_tabular_cases(device), *_lspace_cases(device, dtype)]


def _tabular_cases(device: torch.device) -> Iterable[Case]:
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
                    Impl("autograd-per-step", _autograd(name, lam, per_step=True), kind="peer"),
                ],
                baseline="autograd",
            )
        )
    return cases


LS_B, LS_T = 1024, 200
_LSPACE = {
    "dice": (lambda m, i: m.dice(i["logp"], i["r"], GAMMA)),
    "loaded_dice": (lambda m, i: m.loaded_dice(i["logp"], i["r"], GAMMA, LAM)),
    "lvc": (lambda m, i: m.lvc(i["logp"], i["r"], GAMMA)),
    "off_policy_dice": (lambda m, i: m.off_policy_dice(i["logp"], i["mu"], i["r"], GAMMA)),
    "taypo2": (lambda m, i: m.taypo(i["logp"], i["mu"], i["r"], i["v"], GAMMA, 2)),
    "doubly_robust": (lambda m, i: m.doubly_robust(i["logp"], i["mu"], i["r"], i["v"], GAMMA)),
}


def _lspace_inputs(device, dtype):
    g = torch.Generator().manual_seed(1)

    def rn():
        return torch.randn(LS_B, LS_T, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    logp = -rn().abs()
    return {"logp": logp, "mu": logp + 0.1 * rn(), "r": rn(), "v": rn(), "u": rn()}


def _lspace(fn, module):
    def setup(inp):
        def step():
            logp = inp["logp"].detach().requires_grad_()
            J = fn(module, {**inp, "logp": logp})
            (grad,) = torch.autograd.grad(J, logp, create_graph=True)
            (hvp,) = torch.autograd.grad((grad * inp["u"]).sum(), logp)
            return J.detach(), grad.detach(), hvp

        return step

    return setup


def _lspace_cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    device = torch.device(device)
    if dtype not in (torch.float32, torch.float64):
        return []
    cases = []
    for name, fn in _LSPACE.items():
        impls = [Impl(b, _lspace(fn, fused), backend=b) for b in backends_for(device) if b != "cuda"]
        impls.append(Impl("autograd", _lspace(fn, est), kind="peer"))
        cases.append(
            Case(
                family="estimators",
                name=f"{name}.value+grad+hvp.lspace",
                shape=f"B={LS_B},T={LS_T}",
                device=device,
                dtype=dtype,
                items=LS_B * LS_T,
                bytes_moved=5 * LS_B * LS_T * dtype.itemsize,  # logp, signal(s), u read; grad, hvp written
                make_inputs=lambda: _lspace_inputs(device, dtype),
                impls=impls,
                baseline="autograd",
            )
        )
    return cases
