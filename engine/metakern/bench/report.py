"""Reporting benchmark records: the table, JSON, the PNG plot and comparison with an older run."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

Record = dict[str, Any]

# A record is identified across runs by these fields.
KEY_FIELDS = ("family", "case", "shape", "backend", "device", "dtype")


def key(record: Record) -> tuple:
    return tuple(record.get(k) for k in KEY_FIELDS)


def label(record: Record) -> str:
    return f"{record['family']}/{record['case']}"


# --------------------------------------------------------------------------------------------------
# Human units


def _num(v: float) -> str:
    """About three significant digits, never in exponent notation above 1e-4."""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _scaled(value: float, units: Sequence[tuple[str, float]], fallback: str) -> str:
    for unit, scale in units:
        if value >= scale:
            return f"{_num(value / scale)} {unit}"
    return f"{_num(value)} {fallback}".rstrip()


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds >= 1e-6:
        return _scaled(seconds, (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)), "")
    return f"{_num(seconds * 1e9)} ns"


def fmt_rate(per_s: float | None) -> str:
    if per_s is None or not math.isfinite(per_s):
        return "-"
    return _scaled(per_s, (("T/s", 1e12), ("G/s", 1e9), ("M/s", 1e6), ("k/s", 1e3)), "/s")


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n == 0:
        return "0"
    return _scaled(n, (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)), "B")


def fmt_ratio(x: float | None, suffix: str = "x") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{_num(x)}{suffix}"


# --------------------------------------------------------------------------------------------------
# Table


COLUMNS = ("what", "shape", "device", "backend", "time", "elem/s", "vs ref", "floor", "peak mem")


def table_rows(records: Sequence[Record]) -> list[list[str]]:
    rows = []
    for r in records:
        rows.append(
            [
                label(r),
                r["shape"],
                r["device"],
                r["backend"],
                fmt_time(r["median_s"]),
                fmt_rate(r["items_per_s"]),
                fmt_ratio(r.get("speedup")),
                fmt_ratio(r.get("floor_fraction"), ""),
                fmt_bytes(r.get("peak_mem_bytes")),
            ]
        )
    return rows


def _align(header: Sequence[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(len(header))
    ]

    def line(cells):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    prev_group = None
    for row in rows:
        group = (row[0], row[1])
        if prev_group is not None and group != prev_group:
            out.append("")
        prev_group = group
        out.append(line(row))
    return out


def format_table(records: Sequence[Record]) -> str:
    """One table: what, shape, device, backend, median time, elements/s, speed-up vs reference,
    fraction of the memory floor (copy time / op time) and peak memory."""
    return "\n".join(_align(COLUMNS, table_rows(records), right={4, 5, 6, 7, 8}))


LEGEND = (
    "time: median per call; vs ref: speed-up over the case's baseline, the reference backend unless the\n"
    "case names another (oracle cases: torch.func through the solves);\n"
    "floor: time of a device copy moving the case's bytes (inputs read + outputs written once) / time\n"
    "(1 = at the memory floor); peak mem: peak above the pre-call baseline during one call, outputs included."
)
LEGEND_INTERLEAVED = (
    "--interleave: a case's implementations were timed in alternating rounds; vs ref is the median over\n"
    "rounds of the baseline's time over the row's time in the same round (JSON: speedup_min, speedup_max)."
)


# --------------------------------------------------------------------------------------------------
# JSON


def write_json(path: str, records: Sequence[Record]) -> None:
    """A JSON list with one object per measurement (the run's metadata under each ``meta``)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump(list(records), f, indent=1)
        f.write("\n")


def read_json(path: str) -> list[Record]:
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict) and "records" in data:  # tolerate a {"records": [...]} wrapper
        data = data["records"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: expected a JSON list of benchmark records")
    return data


# --------------------------------------------------------------------------------------------------
# Compare


STATS = ("median", "min")  # what --compare judges: the median per call, or the fastest sample


def compare(
    new: Sequence[Record], old: Sequence[Record], tolerance: float = 0.10, stat: str = "median"
) -> tuple[list[list[str]], list[Record], list[Record], list[Record]]:
    """Match records by (family, case, shape, backend, device, dtype).

    A metakern backend's record regressed if its new ``stat`` (``median``: the median per call;
    ``min``: the fastest sample, which other processes on a shared machine can only slow down, so
    it is the steadier of the two there) exceeds the old one by more than ``tolerance``
    (new > old * (1 + tolerance)). Peers and the copy floor are printed with their ratios but not
    judged: they measure torch and the machine, not metakern.
    Returns (table rows, regressed records, new-only records, old-only records).
    """
    if stat not in STATS:
        raise ValueError(f"stat: expected one of {STATS}, got {stat!r}")
    field = f"{stat}_s"
    old_by_key = {key(r): r for r in old}
    new_keys = {key(r) for r in new}
    for r in (*new, *(o for o in old if key(o) in new_keys)):
        if not isinstance(r.get(field), (int, float)):
            raise ValueError(f"{label(r)} {r.get('shape')} {r.get('backend')}: the record has no {field!r}")
    rows, regressed, added = [], [], []
    for r in new:
        o = old_by_key.get(key(r))
        if o is None:
            added.append(r)
            continue
        ratio = r[field] / o[field] if o[field] else math.inf
        judged = r.get("kind", "backend") == "backend"
        if not judged:
            status = "(not judged)"
        elif ratio > 1 + tolerance:
            status = "REGRESSED"
            regressed.append(r)
        elif ratio < 1 / (1 + tolerance):
            status = "faster"
        else:
            status = "ok"
        rows.append(
            [label(r), r["shape"], r["device"], r["backend"], fmt_time(o[field]), fmt_time(r[field]),
             f"{ratio:.3f}", status]
        )  # fmt: skip
    missing = [o for o in old if key(o) not in new_keys]
    return rows, regressed, added, missing


def format_compare(
    new: Sequence[Record], old: Sequence[Record], tolerance: float = 0.10, stat: str = "median"
) -> tuple[str, bool]:
    """The comparison as text, and whether anything regressed."""
    rows, regressed, added, missing = compare(new, old, tolerance, stat)
    header = ("what", "shape", "device", "backend", f"old {stat}", f"new {stat}", "new/old", "status")
    lines = [
        f"Comparison with the old run ({stat} per call; regression: new/old > {1 + tolerance:.2f}, "
        "metakern backends only)"
    ]
    lines += _align(header, rows, right={4, 5, 6})
    for title, recs in (("new (not in the old run)", added), ("missing (only in the old run)", missing)):
        if recs:
            lines.append(f"\n{title}:")
            lines += [f"  {label(r)} {r['shape']} {r['device']} {r['dtype']} {r['backend']}" for r in recs]
    if regressed:
        lines.append(f"\n{len(regressed)} regressed:")
        lines += [f"  {label(r)} {r['shape']} {r['device']} {r['backend']}" for r in regressed]
    else:
        lines.append("\nno regressions")
    return "\n".join(lines), bool(regressed)


# --------------------------------------------------------------------------------------------------
# Plot


def plot(records: Sequence[Record], path: str) -> str | None:
    """Median time per call, one horizontal bar per backend, grouped by case (log scale).

    Writes a PNG; returns None, or a note if matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install metakern[plot]): no plot written"

    groups: dict[tuple, list[Record]] = {}
    for r in records:
        groups.setdefault((r["device"], label(r), r["shape"]), []).append(r)
    backends = list(dict.fromkeys(r["backend"] for r in records))
    cmap = plt.get_cmap("tab10")
    colours = {b: cmap(i % 10) for i, b in enumerate(b for b in backends if b != "copy")}
    colours["copy"] = "0.65"  # the memory floor in grey

    n_bars = sum(len(v) for v in groups.values()) + len(groups)
    fig, ax = plt.subplots(figsize=(11, max(3.0, 0.24 * n_bars + 1.5)))
    y = 0.0
    ticks, tick_labels = [], []
    seen: set[str] = set()
    for (device, what, shape), recs in groups.items():
        start = y
        for r in recs:
            b = r["backend"]
            ax.barh(y, r["median_s"], color=colours[b], label=b if b not in seen else None, height=0.8)
            seen.add(b)
            text = fmt_time(r["median_s"])
            if r.get("speedup") is not None and r["backend"] != "reference":
                text += f"  ({fmt_ratio(r['speedup'])})"
            ax.text(r["median_s"], y, " " + text, va="center", fontsize=7)
            y += 1
        ticks.append((start + y - 1) / 2)
        tick_labels.append(f"{what}\n{shape} [{device}]")
        y += 1
    ax.set_yticks(ticks)
    ax.set_yticklabels(tick_labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (s, log scale); in brackets: speed-up vs reference")
    dtypes = ", ".join(sorted({r["dtype"] for r in records}))
    ax.set_title(f"metakern bench ({dtypes})")
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(axis="x", which="both", alpha=0.3)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 8)  # room for the labels
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
