"""The environment benchmark cases (metakern/bench/envs.py) and their asv suite."""

import pytest
import torch
from bench_testing import load_asv_suite
from metakern.bench import harness


def _env_cases():
    return list(harness.families()["envs"](torch.device("cpu"), torch.float32))


def test_env_cases_cover_every_family_and_size():
    cases = _env_cases()
    ids = {c.id for c in cases}
    for key in ("krazy", "maze10", "maze20", "gridnavi", "tabular", "ipd"):
        for shape in ("B=8192,K=8", "B=64,K=8", "B=1,K=1"):
            assert f"envs/{key}.step/{shape}" in ids
    assert all(c.items == int(c.shape.split(",")[0][2:]) * int(c.shape.split("K=")[1]) for c in cases)
    assert not list(harness.families()["envs"](torch.device("cpu"), torch.float64))


def test_small_env_case_runs_every_available_implementation():
    case = next(c for c in _env_cases() if c.id == "envs/gridnavi.step/B=64,K=8")
    runner = harness.Runner(settings=harness.QUICK, measure_memory=False)
    rows = {r["backend"]: r for r in runner.measure_case(case)}
    assert {"cpp", "reference", "copy"} <= set(rows)
    assert rows["cpp"]["items"] == 512 and rows["cpp"]["items_per_s"] > 0


def test_asv_env_suite_builds_from_the_cases():
    suite = load_asv_suite("envs")
    case = "envs/gridnavi.step/B=1,K=1"
    assert case in suite.CASES
    bench = suite.EnvStep()
    bench.setup(case, "cpu", "cpp")
    bench.time_steps(case, "cpu", "cpp")
    assert bench.track_env_steps_per_s(case, "cpu", "cpp") > 0
    with pytest.raises(NotImplementedError):
        bench.setup(case, "cpu", "minigrid")
