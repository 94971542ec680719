"""The run folder every ``metakern train`` algorithm writes: config, metrics, checkpoints, plots.

A run folder holds::

    config.json        the algorithm's config (a dataclass) as JSON, written at the start
    metrics.csv        one row per iteration (the columns of the first row; later rows may add none)
    checkpoint.pt      the latest checkpoint, replaced atomically (written to a temporary file in
                       the same folder, flushed, fsynced, then ``os.replace``d over the old one), so
                       an interrupted run never leaves a torn checkpoint
    curves.png         the metrics against the iteration (when matplotlib is installed)
    tb/                TensorBoard event files (when the ``tensorboard`` package is installed)

``Run`` opens a folder for a new run or, with ``resume=True``, reopens one: the checkpoint gives
the iteration to continue from, the metrics file is cut back to that iteration (rows logged after
the last checkpoint are dropped, so a resumed run logs the same rows as an uninterrupted one) and
the saved config must equal the new one apart from ``iterations`` (a resumed run with other settings
is refused; a larger ``iterations`` extends a run, which is how a finished run trains further).
``Progress`` is the progress bar (stderr; a carriage-return bar on a terminal, a line every ~10 %
otherwise).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

CONFIG, METRICS, CHECKPOINT, PLOT = "config.json", "metrics.csv", "checkpoint.pt", "curves.png"
EXTENDABLE = ("iterations",)  # config fields a resumed run may change


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-friendly dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def check_ints(config: Any, names: Sequence[str], low: int = 1) -> None:
    """Raise ValueError unless every field ``names`` of ``config`` is an int >= ``low`` (bools refused)."""
    for name in names:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            what = "a positive int" if low == 1 else f"an int >= {low}"
            raise ValueError(f"{name} must be {what}, got {v!r}")


def check_bools(config: Any, names: Sequence[str]) -> None:
    """Raise ValueError unless every field ``names`` of ``config`` is a bool."""
    for name in names:
        v = getattr(config, name)
        if not isinstance(v, bool):
            raise ValueError(f"{name} must be a bool, got {v!r}")


def check_reals(config: Any, bounds: Sequence[tuple[str, float, float]]) -> None:
    """Raise ValueError unless every field of ``bounds`` (name, low, high) is a finite number in [low, high]."""
    for name, lo, hi in bounds:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically: a reader sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Progress:
    """A progress bar on stderr: ``update(i, **scalars)`` after step i of ``total``."""

    def __init__(self, total: int, desc: str, *, start: int = 0, enabled: bool = True, stream=None):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0, self.start = time.perf_counter(), start
        self._next_line = start

    def update(self, done: int, **scalars: float) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else math.nan
        width = 24
        filled = int(width * done / max(self.total, 1))
        text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        line = (
            f"{self.desc} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
            f"{elapsed:.0f}s eta {eta:.0f}s {text}"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= self.total else ""))
            self.stream.flush()
        elif done >= self._next_line or done >= self.total:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._next_line = done + max(1, self.total // 10)


class Run:
    """A run folder (module docstring). ``log(row)`` appends metrics, ``save(state)`` checkpoints,
    ``state`` is the loaded checkpoint (None for a fresh run), ``start`` the iteration to run next."""

    def __init__(self, path: str | os.PathLike, config: Any, *, resume: bool = False, tensorboard: bool = True):
        self.path = Path(path)
        self.config = config_dict(config)
        self.state: dict[str, Any] | None = None
        self.start = 0
        ckpt = self.path / CHECKPOINT
        if resume:
            if not ckpt.exists():
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
            saved = json.loads((self.path / CONFIG).read_text())
            diff = sorted(
                k for k in set(saved) | set(self.config) if k not in EXTENDABLE and saved.get(k) != self.config.get(k)
            )
            if diff:
                raise ValueError(f"--resume: the run in {self.path} was made with other settings ({', '.join(diff)})")
            self.state = torch.load(ckpt, map_location="cpu", weights_only=False)
            self.start = int(self.state["iteration"])
            if self.config.get("iterations", self.start) < self.start:
                raise ValueError(
                    f"--resume: the run in {self.path} has done {self.start} iterations, more than "
                    f"--iterations {self.config['iterations']}"
                )
            self._truncate_metrics(self.start)
            (self.path / CONFIG).write_text(json.dumps(self.config, indent=2) + "\n")
        else:
            if ckpt.exists():
                raise FileExistsError(
                    f"{self.path} already holds a run: pass --resume to continue it or pick another folder"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / CONFIG).write_text(json.dumps(self.config, indent=2) + "\n")
            (self.path / METRICS).unlink(missing_ok=True)
        self._columns: list[str] | None = self._read_columns()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.path / "tb"), purge_step=self.start)

    def _read_columns(self) -> list[str] | None:
        metrics = self.path / METRICS
        if not metrics.exists():
            return None
        with open(metrics, newline="") as f:
            return next(csv.reader(f), None)

    def _truncate_metrics(self, iteration: int) -> None:
        metrics = self.path / METRICS
        if not metrics.exists():
            return
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
            fields = rows[0].keys() if rows else None
        kept = [r for r in rows if int(float(r["iteration"])) < iteration]
        with open(metrics, "w", newline="") as f:
            if fields is not None:
                w = csv.DictWriter(f, fieldnames=list(fields))
                w.writeheader()
                w.writerows(kept)

    def log(self, row: dict[str, Any]) -> None:
        """Append one row (must hold ``iteration``) to metrics.csv and TensorBoard."""
        metrics = self.path / METRICS
        if self._columns is None:
            self._columns = list(row)
            with open(metrics, "w", newline="") as f:
                csv.writer(f).writerow(self._columns)
        extra = set(row) - set(self._columns)
        if extra:
            raise ValueError(f"metrics row has columns the run did not start with: {sorted(extra)}")
        with open(metrics, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns).writerow(row)
        if self._tb is not None:
            step = int(row["iteration"])
            for k, v in row.items():
                if k != "iteration" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def save(self, state: dict[str, Any]) -> None:
        """Checkpoint ``state`` (must hold ``iteration``: the number of iterations completed)."""
        atomic_save(state, self.path / CHECKPOINT)
        if self._tb is not None:
            self._tb.flush()

    def metrics(self) -> list[dict[str, float]]:
        metrics = self.path / METRICS
        if not metrics.exists():
            return []
        with open(metrics, newline="") as f:
            return [{k: float(v) if v not in ("", None) else math.nan for k, v in r.items()} for r in csv.DictReader(f)]

    def plot(self, groups: Sequence[Sequence[str]], title: str = "") -> Path | None:
        """curves.png: one panel per group of metric names, against the iteration (None without matplotlib)."""
        rows = self.metrics()
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        if not rows:
            return None
        groups = [[k for k in g if k in rows[0]] for g in groups]
        groups = [g for g in groups if g]
        fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
        x = [r["iteration"] for r in rows]
        for ax, group in zip(axes[0], groups, strict=True):
            for key in group:
                pts = [(xi, r[key]) for xi, r in zip(x, rows, strict=True) if math.isfinite(r[key])]
                if pts:
                    ax.plot(*zip(*pts, strict=True), label=key, marker="." if len(pts) < 30 else None)
            ax.set_xlabel("iteration")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        if title:
            fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        out = self.path / PLOT
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
