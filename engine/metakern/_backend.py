"""Backend selection: which implementation runs an op for a given device.

Backends:
  ``reference``  plain PyTorch (any device); the test oracle and the fallback
  ``cpp``        the C++ module ``metakern._C`` (CPU tensors)
  ``cuda``       the CUDA module ``metakern._C_cuda`` (CUDA tensors)
  ``triton``     Triton kernels in ``metakern.kernels`` (CUDA tensors; CPU tensors too when
                 ``TRITON_INTERPRET=1`` was set before import, which is how the tests run them)
  ``auto``       the fastest available backend for the tensors' device (the default)

``use_backend(name)`` forces one, either for the rest of the current context or, used as a context
manager, inside a ``with`` block. ``METAKERN_BACKEND`` sets the initial value.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
import os
import warnings
from types import ModuleType

import torch

BACKENDS = ("auto", "reference", "cpp", "cuda", "triton")

# Order of preference per device type when the backend is "auto". On CUDA the compiled CUDA
# kernel comes first: it needs no JIT warm-up and no Triton install. Ops may override this.
DEFAULT_PREFERENCE: dict[str, tuple[str, ...]] = {"cpu": ("cpp",), "cuda": ("cuda", "triton")}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"metakern backend must be one of {BACKENDS}, got {name!r}")
    return name


def _initial_backend() -> str:
    value = os.environ.get("METAKERN_BACKEND", "auto").strip() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"METAKERN_BACKEND must be one of {BACKENDS}, got {value!r}")
    return value


# The default is a str read once from the environment; new threads start from it too.
_forced: contextvars.ContextVar[str] = contextvars.ContextVar("metakern_backend", default=_initial_backend())  # noqa: B039


class use_backend:  # used like a function and as a context manager
    """Force the backend every metakern op uses.

    ``metakern.use_backend("reference")`` sets it for the rest of the current context;
    ``with metakern.use_backend("cpp"): ...`` sets it inside the block only. ``"auto"`` restores
    automatic selection. A forced backend that cannot run on an op's device raises
    ``RuntimeError`` instead of silently running something else.
    """

    def __init__(self, name: str):
        self.name = _check_name(name)
        self._token = _forced.set(self.name)

    def __enter__(self) -> use_backend:
        return self

    def __exit__(self, *exc) -> None:
        _forced.reset(self._token)


def current_backend() -> str:
    """The forced backend name, or ``"auto"``."""
    return _forced.get()


_modules: dict[str, ModuleType | None] = {}
_errors: dict[str, str] = {}


def _load(name: str) -> ModuleType | None:
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(name)
        except ImportError as exc:  # not built, or built for another platform
            _modules[name] = None
            _errors[name] = str(exc)
    return _modules[name]


def cpp_module() -> ModuleType | None:
    """``metakern._C`` if it was built and loads, else None."""
    return _load("metakern._C")


def cuda_module() -> ModuleType | None:
    """``metakern._C_cuda`` if it was built and loads, else None."""
    return _load("metakern._C_cuda")


def load_error(name: str) -> str | None:
    """Why a compiled module could not be imported (None if it loaded or was never tried)."""
    _load(name)
    return _errors.get(name)


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(backend: str, device_type: str) -> str | None:
    """None if ``backend`` can run on ``device_type`` tensors here, else the reason it cannot."""
    if backend == "reference":
        return None
    if backend == "cpp":
        if device_type != "cpu":
            return f"the C++ backend runs on CPU tensors, not {device_type}"
        return None if cpp_module() is not None else f"metakern._C failed to load: {load_error('metakern._C')}"
    if backend == "cuda":
        if device_type != "cuda":
            return f"the CUDA backend runs on CUDA tensors, not {device_type}"
        if cuda_module() is None:
            return f"metakern._C_cuda was not built or failed to load: {load_error('metakern._C_cuda')}"
        return None
    if backend == "triton":
        if not triton_installed():
            return "triton is not installed (pip install metakern[triton])"
        if device_type == "cuda":
            return None
        if device_type == "cpu" and triton_interpreted():
            return None
        return f"Triton runs on CUDA tensors ({device_type} tensors need TRITON_INTERPRET=1, for testing)"
    return f"unknown backend {backend!r}"


_warned: set[tuple[str, str]] = set()


def _first_usable(prefs: tuple[str, ...], device_type: str) -> tuple[str | None, list[str]]:
    """The first backend of ``prefs`` that can run on ``device_type``, and why the earlier ones cannot."""
    reasons = []
    for backend in prefs:
        reason = unavailable_reason(backend, device_type)
        if reason is None:
            return backend, reasons
        reasons.append(f"{backend}: {reason}")
    return None, reasons


def select(op: str, device_type: str, preference: tuple[str, ...] | None = None) -> str:
    """The backend that runs ``op`` on ``device_type`` tensors now."""
    forced = _forced.get()
    if forced != "auto":
        reason = unavailable_reason(forced, device_type)
        if reason is not None:
            raise RuntimeError(f"metakern: forced backend {forced!r} cannot run {op}: {reason}")
        return forced
    prefs = preference if preference is not None else DEFAULT_PREFERENCE.get(device_type, ())
    backend, reasons = _first_usable(prefs, device_type)
    if backend is not None:
        return backend
    key = (op, device_type)
    if key not in _warned:
        _warned.add(key)
        detail = "; ".join(reasons) if reasons else f"no compiled backend for {device_type}"
        warnings.warn(
            f"metakern: {op} on {device_type} falls back to the slow PyTorch reference ({detail})",
            RuntimeWarning,
            stacklevel=3,
        )
    return "reference"


def active_backends() -> dict[str, str]:
    """What ``auto`` picks per device type here (for ``metakern info``), without warning."""
    out = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device_type in devices:
        forced = _forced.get()
        if forced != "auto":
            reason = unavailable_reason(forced, device_type)
            out[device_type] = forced if reason is None else f"{forced} (unusable: {reason})"
            continue
        out[device_type] = _first_usable(DEFAULT_PREFERENCE.get(device_type, ()), device_type)[0] or "reference"
    return out
