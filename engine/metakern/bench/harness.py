"""Benchmark harness: cases, timing, peak memory, the copy floor and records.

A *case* is one workload at one size on one device and dtype (``scan/linear_scan.fwd/B=4096,T=256``)
with several *implementations*: the metakern backends usable on that device (``reference``,
``cpp``, ``cuda``, ``triton``) and *peers*, the way users write the same computation today
(``torch-loop``, ``cleanrl-loop``). Every implementation runs on the same inputs, made once per
case by ``Case.make_inputs``.

Op families register their cases with ``@register("family")`` in a module of this package;
every module here except the infrastructure (``harness``, ``report``, ``cli``) is imported by
``all_cases``, so a new family is one new module.

Per implementation the harness records (``measure_case``):

* ``median_s``: the median time of one call. After a warm-up, ``number`` is calibrated so that
  one sample (a loop of ``number`` calls) lasts at least ``Settings.min_sample_s``; the median
  of ``repeats`` samples, divided by ``number``, is reported. On CUDA the device is synchronized
  before and after each timed loop, so queued kernels are counted.
* ``peak_mem_bytes``: peak memory above the pre-call baseline during one call, outputs
  included (see ``peak_memory``).
* ``floor_fraction``: the time of a plain device copy moving the case's ``bytes_moved`` (read
  ``bytes_moved / 2`` and write as many) divided by ``median_s``; 1.0 means as fast as moving
  the bytes every implementation must move once. The copy is also a row, backend ``copy``.
* ``speedup``: the baseline's median divided by this median (the ``reference`` backend unless
  the case names another ``baseline``). With ``Runner(interleave=True)`` (``metakern bench
  --interleave``) the implementations are timed in alternating rounds instead, and ``speedup`` is
  the median over rounds of the paired ratio (baseline's time / this one's, same round), with
  ``speedup_min`` and ``speedup_max``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fnmatch
import gc
import importlib
import math
import os
import pkgutil
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import _backend

BACKENDS = ("reference", "cpp", "cuda", "triton")
BASELINE = "reference"  # what ``speedup`` compares with
COPY = "copy"  # the backend name of the copy-floor rows
_BACKEND_DEVICES = {"cpp": ("cpu",), "cuda": ("cuda",), "triton": ("cuda",)}  # reference: any

# Modules of this package that hold no cases.
_INFRASTRUCTURE = frozenset({"harness", "report", "cli"})


# --------------------------------------------------------------------------------------------------
# Cases


@dataclass
class Impl:
    """One way to run a case.

    ``setup(inputs)`` returns the zero-argument callable that is timed. ``backend`` names the
    metakern backend forced (``metakern.use_backend``) while it runs; peers have ``None``.
    ``canonical`` maps the callable's output to the layout of the ``reference`` output, so tests
    can check that every implementation computes the same thing.
    """

    name: str
    setup: Callable[[dict[str, Any]], Callable[[], Any]]
    backend: str | None = None
    kind: str = "backend"  # "backend" (metakern code) or "peer"
    canonical: Callable[[Any], Any] | None = None
    unavailable: Callable[[], str | None] | None = None  # extra availability check (e.g. imports)


@dataclass
class Case:
    """One workload at one size, on one device and dtype."""

    family: str
    name: str
    shape: str
    device: torch.device
    dtype: torch.dtype
    items: int  # elements processed per call (for items/s)
    bytes_moved: int  # memory floor: bytes any implementation must read + write per call
    make_inputs: Callable[[], dict[str, Any]]
    impls: list[Impl] = field(default_factory=list)
    note: str = ""
    baseline: str = BASELINE  # the implementation ``speedup`` compares with
    flops: int | None = None  # floating-point operations of the work per call (a model), if known

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}/{self.shape}"

    def impl(self, name: str) -> Impl:
        for impl in self.impls:
            if impl.name == name:
                return impl
        raise KeyError(f"{self.id} has no implementation {name!r} (has {[i.name for i in self.impls]})")


CaseFactory = Callable[[torch.device, torch.dtype], Iterable[Case]]
_FAMILIES: dict[str, CaseFactory] = {}
_import_errors: dict[str, str] = {}


def register(family: str) -> Callable[[CaseFactory], CaseFactory]:
    """Decorator: ``fn(device, dtype) -> Iterable[Case]`` yields the family's cases."""

    def deco(fn: CaseFactory) -> CaseFactory:
        _FAMILIES[family] = fn
        return fn

    return deco


def _load_families() -> None:
    from .. import bench

    for mod in pkgutil.iter_modules(bench.__path__):
        if mod.name.startswith("_") or mod.name in _INFRASTRUCTURE:
            continue
        try:
            importlib.import_module(f"{bench.__name__}.{mod.name}")
        except ImportError as exc:  # a family whose optional dependency is missing
            _import_errors[mod.name] = str(exc)


# Families whose peers start foreign runtimes (the environment cases load JAX for the gymnax peers,
# whose threads and allocations linger in the process): they run after every other family, so they
# cannot disturb the other families' timings.
RUN_LAST = ("envs",)


def families() -> dict[str, CaseFactory]:
    _load_families()
    order = sorted(_FAMILIES, key=lambda name: name in RUN_LAST)  # stable: import order otherwise
    return {name: _FAMILIES[name] for name in order}


def family_import_errors() -> dict[str, str]:
    _load_families()
    return dict(_import_errors)


# Families left out of a run unless a selection names them (``metakern bench --only synapse-scaling``):
# sweeps that take minutes.
OPT_IN = ("synapse-scaling",)


def opted_in(patterns: Iterable[str] | None) -> list[str]:
    """The opt-in families that one of ``patterns`` (``--only`` selections) names."""
    return [f for f in OPT_IN if any(f in p for p in patterns or ())]


def all_cases(device: torch.device | str, dtype: torch.dtype, opt_in: Iterable[str] = ()) -> list[Case]:
    """Every registered case for ``device`` and ``dtype``, family by family; the families of
    ``OPT_IN`` only when listed in ``opt_in``."""
    device = torch.device(device)
    opt_in = set(opt_in)
    out: list[Case] = []
    for name, fn in families().items():
        if name in OPT_IN and name not in opt_in:
            continue
        out.extend(fn(device, dtype))
    return out


def backends_for(device: torch.device) -> list[str]:
    """The metakern backends that run on ``device``'s type (usable or not)."""
    return [b for b in BACKENDS if device.type in _BACKEND_DEVICES.get(b, (device.type,))]


def impl_unavailable(impl: Impl, device: torch.device) -> str | None:
    """None if ``impl`` can run on ``device`` here, else why not."""
    if impl.unavailable is not None:
        reason = impl.unavailable()
        if reason is not None:
            return reason
    if impl.backend is None:
        return None
    if impl.backend == "triton" and device.type == "cpu":
        return "Triton on CPU runs only in its interpreter; timing that would mean nothing"
    return _backend.unavailable_reason(impl.backend, device.type)


def find_runnable(cases: Iterable[Case], case_id: str, impl: str) -> tuple[Case, Impl]:
    """The case ``case_id`` among ``cases`` and its implementation ``impl``, if it can run here; else
    NotImplementedError with the reason (asv reports that as a skipped benchmark)."""
    for case in cases:
        if case.id != case_id:
            continue
        found = [i for i in case.impls if i.name == impl]
        if not found:
            raise NotImplementedError(f"{case_id} has no {impl} implementation")
        reason = impl_unavailable(found[0], case.device)
        if reason is not None:
            raise NotImplementedError(reason)
        return case, found[0]
    raise NotImplementedError(f"no case {case_id}")


def find_on_device(
    cpu_cases: Iterable[Case], cases_for: Callable[[str], Iterable[Case]], case_id: str, device: str, impl: str
) -> tuple[Case, Impl]:
    """``find_runnable`` for an asv suite parametrised by device: the CPU cases built once at import,
    the others by ``cases_for(device)`` on demand (never at import: asv forks from the importer)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    return find_runnable(cpu_cases if device == "cpu" else cases_for(device), case_id, impl)


def backend_context(impl: Impl) -> contextlib.AbstractContextManager:
    return _backend.use_backend(impl.backend) if impl.backend is not None else contextlib.nullcontext()


def bound(impl: Impl, inputs: dict[str, Any]) -> Callable[[], Any]:
    """``impl``'s callable with its backend forced on every call (for asv and tests)."""
    fn = impl.setup(inputs)
    if impl.backend is None:
        return fn

    def call():
        with _backend.use_backend(impl.backend):
            return fn()

    return call


# --------------------------------------------------------------------------------------------------
# Selection


def row_id(case: Case, backend: str) -> str:
    return f"{case.id}/{backend}"


def matches(patterns: Sequence[str] | None, text: str) -> bool:
    """True if any pattern matches: fnmatch when it has a wildcard (``*?[``), else a substring."""
    if not patterns:
        return True
    for p in patterns:
        if any(ch in p for ch in "*?["):
            if fnmatch.fnmatchcase(text, p):
                return True
        elif p in text:
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True)
class Settings:
    min_sample_s: float  # one sample (a loop of `number` calls) lasts at least this
    max_repeats: int  # samples per measurement, at most
    min_repeats: int  # and at least, even past the budget
    budget_s: float  # stop sampling once this much time went into samples
    warmup_s: float  # warm-up calls for at least this long (and at least `warmup_calls`)
    warmup_calls: int
    quick: bool


FULL = Settings(
    min_sample_s=0.02, max_repeats=15, min_repeats=5, budget_s=1.0, warmup_s=0.05, warmup_calls=2, quick=False
)
QUICK = Settings(
    min_sample_s=0.005, max_repeats=5, min_repeats=3, budget_s=0.1, warmup_s=0.01, warmup_calls=1, quick=True
)


@dataclass
class Timing:
    median_s: float  # per call
    min_s: float  # per call
    number: int  # calls per sample
    repeats: int  # samples


def warmed_up(impl: Impl, case: Case) -> tuple[Callable[[], Any], Callable[[], None]]:
    """``impl`` bound to fresh inputs of ``case`` and called once (JIT, first touch), with the device
    synchronizer: what an asv ``setup`` times."""
    fn = bound(impl, case.make_inputs())
    sync = synchronizer(case.device)
    fn()
    sync()
    return fn, sync


_KEPT: dict[Any, Any] = {}


def keep_latest(key: Any, build: Callable[[], Any]) -> Any:
    """``build()`` for ``key``, cached; only the latest key is kept. asv re-runs ``setup`` before every
    sample, and one entry at a time keeps memory from growing over the parameter grid."""
    if key not in _KEPT:
        _KEPT.clear()
        _KEPT[key] = build()
    return _KEPT[key]


def kept_warm(key: Any, find: Callable[[], tuple[Case, Impl]]) -> tuple[Case, Callable[[], Any], Callable[[], None]]:
    """What an asv ``setup`` needs: ``(case, fn, sync)`` for the case and implementation ``find()``
    returns, warmed up (``warmed_up``) and kept for ``key`` (``keep_latest``)."""

    def build():
        case, impl = find()
        return (case, *warmed_up(impl, case))

    return keep_latest(key, build)


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _sample(fn: Callable[[], Any], number: int, sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync()
    return time.perf_counter() - start


def _warm_up(fn: Callable[[], Any], sync: Callable[[], None], settings: Settings) -> None:
    deadline = time.perf_counter() + settings.warmup_s
    calls = 0
    while calls < settings.warmup_calls or time.perf_counter() < deadline:
        fn()
        calls += 1
    sync()


def _calibrate(fn: Callable[[], Any], sync: Callable[[], None], settings: Settings) -> tuple[int, float]:
    """``number`` (calls per sample) such that a sample lasts at least ``settings.min_sample_s``, and
    the duration of the last sample taken at that ``number``."""
    number = 1
    while True:
        elapsed = _sample(fn, number, sync)
        if elapsed >= settings.min_sample_s:
            return number, elapsed
        # Aim 20% past the target so that the next loop clears it.
        grow = settings.min_sample_s * 1.2 / max(elapsed, 1e-9)
        number = max(number * 2, math.ceil(number * grow))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_callable(fn: Callable[[], Any], device: torch.device, settings: Settings = FULL) -> Timing:
    """Median per-call time of ``fn`` (see the module docstring)."""
    sync = synchronizer(device)
    _warm_up(fn, sync, settings)
    with _gc_paused():
        number, elapsed = _calibrate(fn, sync, settings)
        samples = [elapsed]
        spent = elapsed
        while len(samples) < settings.max_repeats and (
            len(samples) < settings.min_repeats or spent < settings.budget_s
        ):
            elapsed = _sample(fn, number, sync)
            samples.append(elapsed)
            spent += elapsed
    per_call = [s / number for s in samples]
    return Timing(statistics.median(per_call), min(per_call), number, len(per_call))


def time_interleaved(
    fns: Sequence[tuple[Callable[[], Any], Callable[[], contextlib.AbstractContextManager]]],
    device: torch.device,
    settings: Settings = FULL,
) -> tuple[list[Timing], list[list[float]]]:
    """Time several callables in alternating rounds: each ``(fn, context)`` is warmed up and given its
    own ``number`` (as ``time_callable`` does, inside ``context()``), then every round takes one
    sample of each, in an order rotated by one from round to round, so that a slow drift of the
    machine's speed (other tenants, clocks) reaches them all alike. Rounds go on until each callable
    has ``min_repeats`` samples and the rounds used ``budget_s`` per callable, or ``max_repeats``
    rounds. Returns each callable's ``Timing`` and its per-call time round by round (round ``r`` of
    every list was taken in the same round), from which paired ratios follow."""
    sync = synchronizer(device)
    for fn, context in fns:
        with context():
            _warm_up(fn, sync, settings)
    numbers = []
    with _gc_paused():
        for fn, context in fns:
            with context():
                numbers.append(_calibrate(fn, sync, settings)[0])
        per_call: list[list[float]] = [[] for _ in fns]
        spent = 0.0
        rounds = 0
        while rounds < settings.max_repeats and (rounds < settings.min_repeats or spent < settings.budget_s * len(fns)):
            for j in range(len(fns)):
                i = (rounds + j) % len(fns)
                fn, context = fns[i]
                with context():
                    elapsed = _sample(fn, numbers[i], sync)
                per_call[i].append(elapsed / numbers[i])
                spent += elapsed
            rounds += 1
    timings = [Timing(statistics.median(t), min(t), n, len(t)) for t, n in zip(per_call, numbers, strict=True)]
    return timings, per_call


def paired_speedup(base: Sequence[float], times: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max over rounds of ``base[r] / times[r]`` (per-call times from the same rounds
    of ``time_interleaved``)."""
    ratios = [b / t for b, t in zip(base, times, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


# --------------------------------------------------------------------------------------------------
# Peak memory

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's dynamic thresholds never go above these (64-bit): what a long-running process that keeps
# allocating the same tensors converges to. Restored after each measurement (see peak_memory).
_STEADY_MMAP_THRESHOLD = 32 * 1024 * 1024
_STEADY_TRIM_THRESHOLD = 2 * _STEADY_MMAP_THRESHOLD


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    return libc


_LIBC = _glibc()


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _clear_refs_writable() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK) and os.path.exists("/proc/self/status")


def cpu_memory_method() -> str | None:
    """None if CPU peak memory can be measured here, else why not."""
    if _LIBC is None:
        return "needs glibc (mallopt)"
    if not _clear_refs_writable():
        return "/proc/self/clear_refs is not writable"
    return None


@contextlib.contextmanager
def _rss_tracks_live_memory() -> Iterator[None]:
    # Allocations of 64 KiB and up are mmapped (fresh pages, counted in RSS once touched) and
    # returned to the OS when freed; the heap is trimmed on every free; what is free now is
    # returned first. RSS then follows live memory closely.
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    _LIBC.mallopt(_M_TRIM_THRESHOLD, 0)
    _LIBC.malloc_trim(0)
    try:
        yield
    finally:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM_THRESHOLD)


def _cpu_peak(fn: Callable[[], Any]) -> int | None:
    if cpu_memory_method() is not None:
        return None
    gc.collect()
    with _rss_tracks_live_memory():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS
        baseline = _status_kib("VmRSS")
        out = fn()
        peak = _status_kib("VmHWM")
        del out
    return max(0, peak - baseline) * 1024


def _cuda_peak(fn: Callable[[], Any], device: torch.device) -> int:
    gc.collect()
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return max(0, peak - before)


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak memory (bytes) above the pre-call baseline during one call of ``fn``, outputs included.

    CUDA: ``torch.cuda.reset_peak_memory_stats``, then ``max_memory_allocated`` after the call
    minus ``memory_allocated`` before it (bytes held by tensors; the caching allocator's reserve
    does not count).

    CPU: torch keeps no CPU peak counter, so this reads the process's resident set. For the one
    measured call, glibc is told (``mallopt``) to mmap every allocation of 64 KiB or more and to
    trim its heap on every free, and ``malloc_trim(0)`` first hands back what is already free, so
    that the resident set follows live tensors instead of malloc's cache. Then "5" is written to
    ``/proc/self/clear_refs`` (which resets ``VmHWM``, the peak resident set), ``VmRSS`` is read
    as the baseline, ``fn`` runs once, and the result is ``VmHWM - baseline`` (at page
    granularity; allocations under 64 KiB may reuse heap pages and go uncounted). Afterwards the
    thresholds are set to the values glibc's own dynamic thresholds converge to (mmap 32 MiB, trim
    64 MiB), not left in tracking mode: with every tensor a fresh mmap, each call would pay page
    faults on its outputs and time several times slower than in a training loop, so timings are
    never taken in tracking mode. Returns None where this cannot be done (no glibc, no writable
    ``/proc/self/clear_refs``).
    """
    if device.type == "cuda":
        return _cuda_peak(fn, device)
    if device.type == "cpu":
        return _cpu_peak(fn)
    return None


def set_steady_malloc() -> None:
    """Put glibc malloc in the state peak_memory leaves it in, so that every timing sees the same."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM_THRESHOLD)


# --------------------------------------------------------------------------------------------------
# The copy floor


def copy_callable(device: torch.device, bytes_moved: int) -> Callable[[], Any]:
    """``dst.copy_(src)`` with ``src`` of ``bytes_moved // 2`` bytes: reads + writes ``bytes_moved``."""
    n = max(1, bytes_moved // 2)
    src = torch.ones(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


# --------------------------------------------------------------------------------------------------
# Measuring


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class Runner:
    """Measures cases into records. ``select`` filters rows by ``family/case/shape/backend``.

    With ``interleave``, a case's implementations are set up together and timed in alternating
    rounds (``time_interleaved``) instead of one after another, and each ``speedup`` is the median
    of the per-round ratios (``speedup_min`` and ``speedup_max`` give their extremes): steadier on a
    machine whose speed drifts with other tenants' work. It costs memory: every implementation's
    buffers are live at once."""

    settings: Settings = FULL
    select: Sequence[str] | None = None
    meta: dict[str, Any] | None = None
    log: Callable[[str], None] | None = None
    measure_memory: bool = True
    interleave: bool = False  # time a case's implementations in alternating rounds (time_interleaved)
    notes: list[str] = field(default_factory=list)
    _copy_times: dict[tuple[str, int], tuple[Timing, int | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_steady_malloc()

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def selected(self, case: Case) -> list[str]:
        names = [i.name for i in case.impls] + [COPY]
        return [n for n in names if matches(self.select, row_id(case, n))]

    def _copy(self, case: Case) -> tuple[Timing, int | None]:
        key = (str(case.device), case.bytes_moved)
        if key not in self._copy_times:
            fn = copy_callable(case.device, case.bytes_moved)
            timing = time_callable(fn, case.device, self.settings)
            mem = peak_memory(fn, case.device) if self.measure_memory else None
            self._copy_times[key] = (timing, mem)
        return self._copy_times[key]

    def _log_timing(self, case: Case, name: str, timing: Timing) -> None:
        if self.log:
            self.log(f"{row_id(case, name)}: {timing.median_s * 1e6:.1f} us")

    def measure_case(self, case: Case) -> list[dict[str, Any]]:
        names = self.selected(case)
        if not names:
            return []
        inputs = case.make_inputs()
        impls = []
        for impl in case.impls:
            if impl.name not in names:
                continue
            reason = impl_unavailable(impl, case.device)
            if reason is not None:
                self._note(f"{impl.name} skipped on {case.device.type}: {reason}")
                continue
            impls.append(impl)
        measured: dict[str, tuple[Impl | None, Timing, int | None]] = {}
        rounds: dict[str, list[float]] = {}
        if self.interleave and len(impls) > 1:
            if self.log:
                self.log(f"{case.id}: {len(impls)} implementations in alternating rounds")
            fns = [impl.setup(inputs) for impl in impls]
            timings, per_round = time_interleaved(
                [(fn, lambda impl=impl: backend_context(impl)) for fn, impl in zip(fns, impls, strict=True)],
                case.device,
                self.settings,
            )
            for impl, fn, timing, times in zip(impls, fns, timings, per_round, strict=True):
                with backend_context(impl):
                    mem = peak_memory(fn, case.device) if self.measure_memory else None
                measured[impl.name] = (impl, timing, mem)
                rounds[impl.name] = times
                self._log_timing(case, impl.name, timing)
            del fns
        else:
            for impl in impls:
                fn = impl.setup(inputs)
                with backend_context(impl):
                    timing = time_callable(fn, case.device, self.settings)
                    mem = peak_memory(fn, case.device) if self.measure_memory else None
                del fn
                measured[impl.name] = (impl, timing, mem)
                self._log_timing(case, impl.name, timing)
        del inputs
        copy_timing, copy_mem = self._copy(case)
        if COPY in names:
            measured[COPY] = (None, copy_timing, copy_mem)
        base = measured.get(case.baseline)
        records = []
        for name, (impl, timing, mem) in measured.items():
            speedup = base[1].median_s / timing.median_s if base is not None else None
            paired = None
            if case.baseline in rounds and name in rounds:
                paired = paired_speedup(rounds[case.baseline], rounds[name])
                speedup = paired[0]
            records.append(
                {
                    "family": case.family,
                    "case": case.name,
                    "shape": case.shape,
                    "backend": name,
                    "kind": impl.kind if impl is not None else COPY,
                    "device": case.device.type,
                    "dtype": dtype_name(case.dtype),
                    "median_s": timing.median_s,
                    "min_s": timing.min_s,
                    "number": timing.number,
                    "repeats": timing.repeats,
                    "items": case.items,
                    "items_per_s": case.items / timing.median_s,
                    "bytes_moved": case.bytes_moved,
                    "bytes_per_s": case.bytes_moved / timing.median_s,
                    "baseline": case.baseline,
                    "speedup": speedup,
                    "copy_s": copy_timing.median_s,
                    "floor_fraction": copy_timing.median_s / timing.median_s,
                    "peak_mem_bytes": mem,
                    "quick": self.settings.quick,
                    "meta": self.meta or {},
                }
            )
            if paired is not None:
                # Interleaved: speedup is the median over rounds of the baseline's time in a round over
                # this one's in the same round; these are the extremes of those per-round ratios.
                records[-1]["speedup_min"], records[-1]["speedup_max"] = paired[1], paired[2]
            if case.flops and impl is not None and impl.kind == "backend":
                # The count models the fused algorithm: a peer doing other work gets none.
                records[-1]["flops"] = case.flops
                records[-1]["flops_per_s"] = case.flops / timing.median_s
        return records

    def run(self, cases: Iterable[Case]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for case in cases:
            records.extend(self.measure_case(case))
        if self.measure_memory and any(c == "cpu" for c in {r["device"] for r in records}):
            why = cpu_memory_method()
            if why is not None:
                self._note(f"CPU peak memory not measured: {why}")
        return records
