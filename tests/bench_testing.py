"""Helpers shared by the benchmark tests."""

import importlib.util
import pathlib


def load_asv_suite(name: str):
    """The asv suite ``bench/benchmarks/<name>.py`` as a module (asv imports it by path, not as a package)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"asv_{name}", path)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    return suite
