"""Benchmark harness behind ``metakern bench`` and ``metakern profile`` (and the asv suite in bench/).

``harness`` holds the case registry, timing, peak memory and records; ``report`` the table, JSON,
plot and comparison; each other module is one op family's cases (``scan``), registered with
``@harness.register("family")`` and picked up by ``harness.all_cases``.
"""

from .harness import BASELINE, COPY, FULL, QUICK, Case, Impl, Runner, Settings, all_cases, register

__all__ = ["BASELINE", "COPY", "FULL", "QUICK", "Case", "Impl", "Runner", "Settings", "all_cases", "register"]
