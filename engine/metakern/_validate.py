"""Argument checks at the op boundary: every public op calls these before anything reaches a
kernel, so bad input raises a TypeError/ValueError that names the argument instead of crashing."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_DTYPE_NAMES = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)


def tensor(
    name: str,
    t: object,
    *,
    ndim: int | None = None,
    layout: str = "",
    dtypes: tuple[torch.dtype, ...] | None = FLOAT_DTYPES,
    contiguous: bool = True,
) -> torch.Tensor:
    """Check that ``t`` is a tensor of the given rank and dtype family, contiguous and non-empty."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = _DTYPE_NAMES if dtypes is FLOAT_DTYPES else ", ".join(str(d) for d in dtypes)
        raise TypeError(f"{name}: expected a floating tensor ({allowed}), got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        shape = f" {layout}" if layout else ""
        raise ValueError(f"{name}: expected a {ndim}-D tensor{shape}, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {tuple(t.shape)}")
    if contiguous and not t.is_contiguous():
        raise ValueError(
            f"{name}: expected a contiguous tensor, got strides {t.stride()} for shape "
            f"{tuple(t.shape)}; call .contiguous() first"
        )
    return t


def same_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name}: expected a tensor on {ref.device} (like {ref_name}), got {t.device}")


def same_dtype(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} (like {ref_name}), got {t.dtype}")


def shape(name: str, t: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {what} = {tuple(expected)}, got {tuple(t.shape)}")


def real(name: str, value: object, *, low: float | None = None, high: float | None = None) -> float:
    """A Python number (or 0-d tensor) within [low, high]."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    if v != v:
        raise ValueError(f"{name}: expected a number, got NaN")
    if low is not None and v < low:
        raise ValueError(f"{name}: expected a value >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name}: expected a value <= {high}, got {v}")
    return v
