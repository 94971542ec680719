"""Reference linear scan: a Python loop over time of plain torch ops.

Readable, differentiable by autograd, float64-capable: the oracle every kernel is tested against,
and the fallback when no compiled backend is available. It is also how RL code computes returns
today, so benchmarks use it as the baseline.
"""

from __future__ import annotations

import torch


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """16-bit inputs accumulate in float32; float32/float64 in themselves."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def linear_scan_reference(x: torch.Tensor, a: torch.Tensor, carry: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """y[:, t] = a[:, t] * y[:, t -/+ 1] + x[:, t] over the time axis of [B, T] tensors.

    Forward: y[:, -1] is ``carry``. Reverse (``reverse=True``): the recursion runs from t = T-1
    down to 0 and y[:, T] is ``carry``. Returns a tensor of x's dtype.
    """
    acc = accumulator_dtype(x.dtype)
    h = carry.to(acc)
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    ys = []
    for t in steps:
        h = a[:, t].to(acc) * h + x[:, t].to(acc)
        ys.append(h)
    if reverse:
        ys.reverse()
    return torch.stack(ys, dim=1).to(x.dtype)
