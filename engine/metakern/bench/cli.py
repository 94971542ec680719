"""``metakern bench`` and ``metakern profile``."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import socket
import subprocess
import sys
import time
from typing import Any

import torch

from .. import _backend
from . import harness, report

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="time every op against its reference and peers; print a table, write JSON and a plot",
        description=(
            "Time every benchmark case (metakern backends, the reference, peers and a device copy "
            "of the case's bytes) and print one table. Patterns for --only match "
            "'family/case/shape/backend', e.g. 'scan/linear_scan.fwd/B=4096,T=256/cpp': with a "
            "wildcard (*?[) as fnmatch, else as a substring."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="fewer, shorter samples (about 150 s on 2 cores)")
    bench.add_argument("--only", action="append", metavar="PATTERN", help="run only matching rows (repeatable)")
    bench.add_argument(
        "--device",
        action="append",
        choices=("cpu", "cuda"),
        help="device to run on (repeatable; default: cpu, plus cuda if available)",
    )
    bench.add_argument("--dtype", choices=tuple(_DTYPES), default="float32")
    bench.add_argument("--json", metavar="PATH", help="write the records as a JSON list, one per measurement")
    bench.add_argument("--plot", metavar="PATH", help="write a PNG plot (needs matplotlib)")
    bench.add_argument(
        "--compare",
        metavar="OLD.json",
        help="compare with an older --json run; exit 1 if a metakern backend regressed (see --stat)",
    )
    bench.add_argument(
        "--tolerance",
        type=float,
        default=0.10,
        help="--compare: a time more than this fraction above the old one is a regression (default 0.10)",
    )
    bench.add_argument(
        "--stat",
        choices=report.STATS,
        default="median",
        help="--compare: judge the median per call (default) or the fastest sample ('min': steadier on a "
        "machine shared with other work)",
    )
    bench.add_argument("--no-memory", action="store_true", help="skip the peak memory measurement")
    bench.add_argument(
        "--interleave",
        action="store_true",
        help="time each case's implementations in alternating rounds (order rotated) instead of one after "
        "another; 'vs ref' becomes the median of per-round ratios (JSON: speedup_min/speedup_max): "
        "steadier on a machine shared with other work, at the cost of every implementation's memory at once",
    )
    bench.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    bench.set_defaults(func=run_bench)

    prof = sub.add_parser(
        "profile",
        help="run one benchmark case under torch.profiler; write a Chrome trace and print the top ops",
        description=(
            "CASE is a case name or a pattern over 'family/case/shape' that must select exactly one "
            "case, e.g. 'linear_scan.fwd/B=4096,T=256'."
        ),
    )
    prof.add_argument("case", metavar="CASE")
    prof.add_argument("--backend", help="implementation to run (default: what 'auto' picks on the device)")
    prof.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    prof.add_argument("--dtype", choices=tuple(_DTYPES), default="float32")
    prof.add_argument("--out", default="profile-out", metavar="DIR", help="where the trace goes (default profile-out)")
    prof.add_argument("--steps", type=int, default=10, help="calls profiled (default 10)")
    prof.set_defaults(func=run_profile)


# --------------------------------------------------------------------------------------------------
# Run metadata


def _git(*args: str) -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_busy_fraction(window_s: float = 0.25) -> float | None:
    """Fraction of all CPUs' time spent busy during ``window_s`` while this process sleeps, i.e. by
    other processes (Linux /proc/stat; None elsewhere)."""

    def sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # user nice system idle iowait irq softirq steal

    try:
        total0, idle0 = sample()
        time.sleep(window_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else 1.0 - (idle1 - idle0) / total


def run_meta(args: argparse.Namespace) -> dict[str, Any]:
    from ..info import collect

    meta: dict[str, Any] = dict(collect())
    commit = _git("rev-parse", "HEAD")
    meta.update(
        {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "git_commit": commit,
            "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None,
            "argv": sys.argv[1:],
            "quick": bool(getattr(args, "quick", False)),
            "loadavg_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "cpu_busy_at_start": cpu_busy_fraction(),
        }
    )
    return meta


def _devices(requested: list[str] | None) -> list[torch.device]:
    if requested:
        return [torch.device(d) for d in dict.fromkeys(requested)]
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------------------------------
# bench


def run_bench(args: argparse.Namespace) -> int:
    devices = _devices(args.device)
    if any(d.type == "cuda" for d in devices) and not torch.cuda.is_available():
        print("metakern bench: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.tolerance < 0:
        print("metakern bench: --tolerance must be >= 0", file=sys.stderr)
        return 2
    old = None
    if args.compare:
        try:
            old = report.read_json(args.compare)
        except (OSError, ValueError) as exc:
            print(f"metakern bench: --compare: {exc}", file=sys.stderr)
            return 2
        if not all(isinstance(r.get(f"{args.stat}_s"), (int, float)) for r in old):
            print(f"metakern bench: --compare {args.compare}: records without '{args.stat}_s'", file=sys.stderr)
            return 2
    dtype = _DTYPES[args.dtype]
    settings = harness.QUICK if args.quick else harness.FULL

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    runner = harness.Runner(
        settings=settings,
        select=args.only,
        meta=run_meta(args),
        log=None if args.quiet else log,
        measure_memory=not args.no_memory,
        interleave=args.interleave,
    )
    busy = runner.meta.get("cpu_busy_at_start")
    if busy is not None and busy >= 0.25:
        runner.notes.append(
            f"other processes kept {busy:.0%} of the CPUs busy when this run started: "
            "timings may be noisy (the compiled kernels use every core)"
        )
    start = time.perf_counter()
    records = []
    for device in devices:
        records += runner.run(harness.all_cases(device, dtype, harness.opted_in(args.only)))
    elapsed = time.perf_counter() - start
    for name, err in harness.family_import_errors().items():
        runner.notes.append(f"family module {name} not loaded: {err}")
    if not records:
        print(f"metakern bench: nothing matched --only {args.only}", file=sys.stderr)
        return 2

    meta = runner.meta
    print(
        f"metakern bench ({'quick' if args.quick else 'full'}, {args.dtype}): torch {meta['torch']}, "
        f"{meta['torch_threads']} threads, {meta['cpu']}"
        + (f", C++ SIMD {meta['cpp_simd']}" if "cpp_simd" in meta else "")
        + (f", GPU {meta['cuda_device']}" if torch.cuda.is_available() else "")
    )
    print()
    print(report.format_table(records))
    print()
    print(report.LEGEND)
    if args.interleave:
        print(report.LEGEND_INTERLEAVED)
    for note in runner.notes:
        print(f"note: {note}")
    print(f"{len(records)} measurements in {elapsed:.1f} s")
    if args.json:
        report.write_json(args.json, records)
        print(f"wrote {args.json}")
    if args.plot:
        note = report.plot(records, args.plot)
        print(f"note: {note}" if note else f"wrote {args.plot}")
    if old is not None:
        # Old records outside this run's selection (--only, --device, --dtype) are not "missing". A case
        # that fixes its own dtype (the float64 oracle) is matched at that dtype, whatever --dtype says.
        wanted = {d.type for d in devices}
        run_dtype = {(r["family"], r["case"], r["shape"], r["device"]): r["dtype"] for r in records}
        old = [
            r
            for r in old
            if r.get("device") in wanted
            and r.get("dtype")
            == run_dtype.get((r.get("family"), r.get("case"), r.get("shape"), r.get("device")), args.dtype)
            and harness.matches(args.only, f"{r.get('family')}/{r.get('case')}/{r.get('shape')}/{r.get('backend')}")
        ]
        text, regressed = report.format_compare(records, old, args.tolerance, args.stat)  # stats checked above
        print()
        print(text)
        return 1 if regressed else 0
    return 0


# --------------------------------------------------------------------------------------------------
# profile


def find_case(cases: list[harness.Case], pattern: str) -> tuple[harness.Case | None, list[harness.Case]]:
    """The one case ``pattern`` selects: an exact id or name first, then a pattern over ids."""
    exact = [c for c in cases if pattern in (c.id, c.name, f"{c.name}/{c.shape}")]
    found = exact or [c for c in cases if harness.matches([pattern], c.id)]
    return (found[0] if len(found) == 1 else None), found


def _default_impl(case: harness.Case) -> str:
    """The backend ``auto`` would pick if the case has it, else its first metakern implementation."""
    prefs = _backend.DEFAULT_PREFERENCE.get(case.device.type, ())
    for b in prefs:
        if _backend.unavailable_reason(b, case.device.type) is None and any(i.name == b for i in case.impls):
            return b
    return next((i.name for i in case.impls if i.kind == "backend"), case.baseline)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text.replace("=", "")).strip("_")


def run_profile(args: argparse.Namespace) -> int:
    from torch.profiler import ProfilerActivity, profile, record_function

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("metakern profile: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.steps < 1:
        print("metakern profile: --steps must be >= 1", file=sys.stderr)
        return 2
    cases = harness.all_cases(device, _DTYPES[args.dtype], harness.opted_in([args.case]))
    case, found = find_case(cases, args.case)
    if case is None:
        what = "matches several cases" if found else "matches no case"
        print(f"metakern profile: {args.case!r} {what}; pick one of:", file=sys.stderr)
        for c in found or cases:
            print(f"  {c.id}", file=sys.stderr)
        return 2
    name = args.backend or _default_impl(case)
    try:
        impl = case.impl(name)
    except KeyError:
        print(f"metakern profile: {case.id} has no implementation {name!r}; pick one of:", file=sys.stderr)
        for i in case.impls:
            print(f"  {i.name}", file=sys.stderr)
        return 2
    reason = harness.impl_unavailable(impl, device)
    if reason is not None:
        print(f"metakern profile: {name} cannot run on {device.type}: {reason}", file=sys.stderr)
        return 2

    inputs = case.make_inputs()
    fn = impl.setup(inputs)
    sync = harness.synchronizer(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with harness.backend_context(impl):
        for _ in range(3):  # warm-up (JIT compilation, first-touch allocations)
            fn()
        sync()
        with profile(activities=activities, record_shapes=True) as prof:
            for step in range(args.steps):
                with record_function(f"bench:{case.name}:{name}:step{step}"):
                    fn()
            sync()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{_slug(case.name + '_' + case.shape)}-{_slug(name)}.trace.json")
    prof.export_chrome_trace(path)
    if device.type == "cuda":
        sort_by = "self_device_time_total"
    else:
        sort_by = "self_cpu_time_total"
    print(f"{case.id} [{name}, {device.type}, {args.dtype}]: {args.steps} calls profiled")
    print(prof.key_averages().table(sort_by=sort_by, row_limit=15))
    print(f"wrote {path} (open in chrome://tracing or https://ui.perfetto.dev)")
    return 0
