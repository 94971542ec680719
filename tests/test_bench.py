"""The benchmark harness (metakern.bench): records, --only, --compare, profile, memory method.

No timing is asserted; the runs use the tiny B=8,T=16 case in quick mode so that they are fast.
"""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
import torch
from bench_testing import load_asv_suite
from metakern.bench import harness, report
from metakern.bench import scan as scan_cases
from metakern.cli import main

TINY = "scan/linear_scan.fwd/B=8,T=16/*"
TINY_CPP = "*/linear_scan.fwd/B=8,T=16/cpp"  # fnmatch (it has a wildcard): exactly the cpp row
REQUIRED = {
    "family",
    "case",
    "shape",
    "backend",
    "kind",
    "device",
    "dtype",
    "median_s",
    "items_per_s",
    "baseline",
    "speedup",
    "peak_mem_bytes",
    "floor_fraction",
    "repeats",
    "meta",
}


def _bench(tmp_path, name, *args):
    path = tmp_path / name
    rc = main(["bench", "--quick", "-q", "--device", "cpu", "--json", str(path), *args])
    return rc, (json.loads(path.read_text()) if path.exists() else None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    rc, records = _bench(tmp, "tiny.json", "--only", TINY)
    assert rc == 0
    return records


def test_registry_has_the_scan_family():
    cases = harness.all_cases("cpu", torch.float32)
    ids = {c.id for c in cases}
    assert "scan/linear_scan.fwd/B=4096,T=256" in ids
    assert "scan/linear_scan.fwd+bwd/B=64,T=4096" in ids
    for c in cases:
        names = [i.name for i in c.impls]
        assert c.baseline in names  # every case can report its speed-up
        if c.family != "scan":
            continue
        assert "reference" in names and "cpp" in names
        assert any(i.kind == "peer" for i in c.impls)
        assert c.items > 0 and c.bytes_moved > 0
        assert "cuda" not in names and "triton" not in names  # CPU cases list CPU backends only


def test_every_implementation_computes_the_same_thing():
    cases = scan_cases.scan_cases("cpu", torch.float64, shapes=[(3, 7)], tiny=(2, 5))
    checked = 0
    for case in cases:
        inputs = case.make_inputs()
        expected = harness.bound(case.impl("reference"), inputs)()
        for impl in case.impls:
            if harness.impl_unavailable(impl, case.device) is not None:
                continue
            out = harness.bound(impl, inputs)()
            if impl.canonical is not None:
                out = impl.canonical(out)
            got = out if isinstance(out, tuple) else (out,)
            want = expected if isinstance(expected, tuple) else (expected,)
            assert len(got) == len(want), (case.id, impl.name)
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=f"{case.id} {impl.name}")
            checked += 1
    assert checked >= 2 * len(cases)


def test_json_is_a_list_of_records(tiny_run):
    assert isinstance(tiny_run, list) and tiny_run
    for r in tiny_run:
        assert REQUIRED <= r.keys()
        assert r["median_s"] > 0 and r["repeats"] >= harness.QUICK.min_repeats
        assert r["baseline"] == "reference"
        assert r["meta"]["torch"] == torch.__version__
    by_backend = {r["backend"]: r for r in tiny_run}
    assert {"reference", "cpp", "cpp-dispatcher", "torch-loop", "copy"} <= by_backend.keys()
    assert by_backend["reference"]["speedup"] == pytest.approx(1.0)
    assert by_backend["copy"]["floor_fraction"] == pytest.approx(1.0)
    assert by_backend["torch-loop"]["kind"] == "peer"


def test_only_selects_rows(tmp_path):
    rc, records = _bench(tmp_path, "cpp.json", "--only", TINY_CPP, "--no-memory")
    assert rc == 0
    assert [r["backend"] for r in records] == ["cpp"]
    assert records[0]["speedup"] is None  # the reference was not run
    # a pattern without wildcards is a substring
    rc, records = _bench(tmp_path, "disp.json", "--only", "B=8,T=16/cpp-disp", "--no-memory")
    assert rc == 0 and [r["backend"] for r in records] == ["cpp-dispatcher"]


def test_only_matching_nothing_is_an_error(tmp_path, capsys):
    rc, records = _bench(tmp_path, "none.json", "--only", "no-such-case")
    assert rc == 2 and records is None
    assert "nothing matched" in capsys.readouterr().err


def test_matches():
    assert harness.matches(None, "a/b")
    assert harness.matches(["b/c"], "a/b/c/d")
    assert harness.matches(["a/*/d"], "a/b/c/d")
    assert not harness.matches(["a/*/x"], "a/b/c/d")
    assert not harness.matches(["z"], "a/b")


def _scaled(records, factor, **overrides):
    out = copy.deepcopy(records)
    for r in out:
        r["median_s"] *= factor
        r.update(overrides)
    return out


def test_compare_exits_1_on_regression(tmp_path, tiny_run, capsys):
    cpp = [r for r in tiny_run if r["backend"] == "cpp"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_scaled(cpp, 1e-3)))  # the old run was 1000x faster
    rc, _ = _bench(tmp_path, "new.json", "--only", TINY_CPP, "--no-memory", "--compare", str(old))
    assert rc == 1
    assert "REGRESSED" in capsys.readouterr().out


def test_compare_exits_0_without_regression(tmp_path, tiny_run, capsys):
    cpp = [r for r in tiny_run if r["backend"] == "cpp"]
    gone = dict(cpp[0], backend="cpp-gone")
    elsewhere = dict(cpp[0], dtype="float64")  # outside this run's selection: not listed
    old = tmp_path / "old.json"
    old.write_text(json.dumps([*_scaled(cpp, 1e3), gone, elsewhere]))  # the old run was 1000x slower
    only = "*/linear_scan.fwd/B=8,T=16/cpp*"  # cpp and cpp-dispatcher
    rc, _ = _bench(tmp_path, "new.json", "--only", only, "--no-memory", "--compare", str(old))
    out = capsys.readouterr().out
    assert rc == 0
    assert "faster" in out and "no regressions" in out
    # unmatched records are listed, and are not regressions
    assert "new (not in the old run)" in out and "cpp-dispatcher" in out.split("new (not in the old run)")[1]
    assert "missing" in out and "cpp-gone" in out
    assert "float64" not in out


def test_compare_does_not_judge_peers(tiny_run):
    peers = [r for r in tiny_run if r["kind"] != "backend"]
    assert peers
    text, regressed = report.format_compare(peers, _scaled(peers, 1e-3), tolerance=0.1)
    assert not regressed and "not judged" in text
    new = [r for r in tiny_run if r["backend"] == "cpp"]
    _, regressed = report.format_compare(new, _scaled(new, 1 / 1.2), tolerance=0.1)
    assert regressed  # new = 1.2 x old > 1.1 x old
    _, regressed = report.format_compare(new, _scaled(new, 1 / 1.05), tolerance=0.1)
    assert not regressed


def test_compare_by_fastest_sample(tiny_run):
    new = [r for r in tiny_run if r["backend"] == "cpp"]
    noisy = copy.deepcopy(new)
    for r in noisy:  # a busy machine: the median got 1.5x slower, the fastest sample did not
        r["median_s"] *= 1.5
    _, regressed = report.format_compare(noisy, new, tolerance=0.1)
    assert regressed
    text, regressed = report.format_compare(noisy, new, tolerance=0.1, stat="min")
    assert not regressed and "min per call" in text
    slower = copy.deepcopy(new)
    for r in slower:
        r["min_s"] *= 1.2
    _, regressed = report.format_compare(slower, new, tolerance=0.1, stat="min")
    assert regressed
    with pytest.raises(ValueError, match="stat"):
        report.compare(new, new, stat="mean")
    with pytest.raises(ValueError, match="no 'min_s'"):
        report.compare(new, [{k: v for k, v in r.items() if k != "min_s"} for r in new], stat="min")


def test_compare_stat_missing_from_old_run(tmp_path, tiny_run, capsys):
    cpp = [{k: v for k, v in r.items() if k != "min_s"} for r in tiny_run if r["backend"] == "cpp"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(cpp))
    rc, records = _bench(
        tmp_path, "new.json", "--only", TINY_CPP, "--no-memory", "--compare", str(old), "--stat", "min"
    )
    assert rc == 2 and records is None  # refused before anything ran
    assert "min_s" in capsys.readouterr().err


def test_compare_matches_cases_that_fix_their_dtype(tmp_path, capsys):
    # the oracle runs in float64 whatever --dtype says (default float32): its old rows still match
    only = "oracle/maml_meta_gradient*/cpp"
    rc, records = _bench(tmp_path, "old.json", "--only", only, "--no-memory")
    assert rc == 0 and [r["dtype"] for r in records] == ["float64"]
    old = tmp_path / "slow.json"
    old.write_text(json.dumps(_scaled(records, 1e3)))
    rc, _ = _bench(tmp_path, "new.json", "--only", only, "--no-memory", "--compare", str(old))
    out = capsys.readouterr().out
    assert rc == 0 and "faster" in out and "not in the old run" not in out


def test_table_and_plot(tiny_run, tmp_path):
    table = report.format_table(tiny_run)
    for col in ("what", "shape", "backend", "time", "elem/s", "vs ref", "floor", "peak mem"):
        assert col in table.splitlines()[0]
    assert "cpp-dispatcher" in table
    pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    assert report.plot(tiny_run, str(path)) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_units():
    assert report.fmt_time(1.5e-6) == "1.5 us"
    assert report.fmt_time(0.25) == "250 ms"
    assert report.fmt_bytes(3 << 20) == "3 MiB"
    assert report.fmt_rate(2.5e9) == "2.5 G/s"
    assert report.fmt_ratio(None) == "-"


def test_profile_writes_a_trace(tmp_path, capsys):
    rc = main(["profile", "linear_scan.fwd/B=8,T=16", "--device", "cpu", "--out", str(tmp_path), "--steps", "2"])
    assert rc == 0
    traces = list(tmp_path.glob("*.trace.json"))
    assert [t.name for t in traces] == ["linear_scan.fwd_B8_T16-cpp.trace.json"]
    assert "traceEvents" in json.loads(traces[0].read_text())
    assert "metakern::linear_scan" in capsys.readouterr().out


def test_profile_needs_exactly_one_case(tmp_path, capsys):
    rc = main(["profile", "linear_scan.fwd", "--device", "cpu", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "several" in err and "B=8,T=16" in err
    rc = main(["profile", "no-such-case", "--device", "cpu", "--out", str(tmp_path)])
    assert rc == 2 and "no case" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(harness.cpu_memory_method() is not None, reason="CPU peak memory not measurable here")
def test_cpu_peak_memory_sees_an_allocation():
    n = 16 << 20
    peak = harness.peak_memory(lambda: torch.ones(n // 4, dtype=torch.float32), torch.device("cpu"))
    assert peak is not None and n * 0.9 <= peak <= n * 1.5
    x = torch.ones(n // 4)
    peak = harness.peak_memory(lambda: x.add_(1), torch.device("cpu"))  # in place: nothing new
    assert peak is not None and peak < n * 0.1


def test_time_callable_shape_of_result():
    t = harness.time_callable(lambda: None, torch.device("cpu"), harness.QUICK)
    assert t.number >= 1 and harness.QUICK.min_repeats <= t.repeats <= harness.QUICK.max_repeats
    assert 0 < t.min_s <= t.median_s


class _ScriptedClock:
    """Stands in for ``harness._sample``: each callable's sample lasts ``base[fn] * factor`` seconds,
    where ``factor`` follows a script shared by every callable (the machine's speed drifting from
    one sample to the next), and the order in which samples were taken is logged."""

    def __init__(self, base, factors):
        self.base, self.factors, self.log = base, factors, []

    def __call__(self, fn, number, sync):
        factor = self.factors[min(len(self.log), len(self.factors) - 1)]
        self.log.append(fn)
        return self.base[fn] * factor * number


def test_time_interleaved_alternates_and_pairs_rounds(monkeypatch):
    def fast():
        return None

    def slow():
        return None

    # A slow call lasts 10x a fast one; the machine slows down 3x halfway through the samples.
    clock = _ScriptedClock({fast: 0.001, slow: 0.01}, [1.0] * 40 + [3.0] * 200)
    monkeypatch.setattr(harness, "_sample", clock)
    settings = harness.Settings(
        min_sample_s=0.004, max_repeats=30, min_repeats=30, budget_s=0.0, warmup_s=0.0, warmup_calls=1, quick=True
    )
    null = contextlib.nullcontext
    (t_fast, t_slow), (r_fast, r_slow) = harness.time_interleaved(
        [(fast, null), (slow, null)], torch.device("cpu"), settings
    )
    assert t_fast.repeats == t_slow.repeats == len(r_fast) == len(r_slow) == 30
    assert t_fast.number > t_slow.number == 1  # each calibrated on its own
    rounds = clock.log[-60:]  # after the calibration samples: one of each per round, order rotated
    assert all({rounds[2 * r], rounds[2 * r + 1]} == {fast, slow} for r in range(30))
    assert rounds[0] is not rounds[2]
    # Paired ratios see through the drift, as the times per round do not: every round but the one
    # the slow-down fell in (between its two samples) gives the true ratio.
    assert max(r_fast) == pytest.approx(3 * min(r_fast))
    ratios = [s / f for s, f in zip(r_slow, r_fast, strict=True)]
    assert sum(r != pytest.approx(10.0) for r in ratios) <= 1
    median, low, high = harness.paired_speedup(r_slow, r_fast)
    assert median == pytest.approx(10.0) and low == pytest.approx(min(ratios)) and high == pytest.approx(max(ratios))


def test_interleaved_run_records_paired_speedups(tmp_path):
    rc, records = _bench(tmp_path, "interleaved.json", "--only", TINY, "--interleave")
    assert rc == 0
    rows = {r["backend"]: r for r in records}
    assert {"reference", "cpp", "copy"} <= set(rows)
    for name in ("reference", "cpp"):
        r = rows[name]
        assert REQUIRED <= set(r)
        assert r["speedup_min"] <= r["speedup"] <= r["speedup_max"]
        assert r["repeats"] == rows["reference"]["repeats"]  # the same rounds
    assert rows["reference"]["speedup"] == rows["reference"]["speedup_min"] == 1.0
    assert "speedup_min" not in rows["copy"]  # the copy is timed on its own


def test_oracle_cases_agree_with_their_torch_func_baselines():
    """The oracle rows and the torch.func rows compute the same numbers (small sizes)."""
    from metakern.bench import oracle as oracle_cases

    inputs = oracle_cases._inputs(3, 5, 3, "cpu")
    inputs["theta"] = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(
        oracle_cases._meta_oracle(inputs)(), oracle_cases._meta_unrolled(inputs)(), rtol=1e-9, atol=1e-11
    )
    torch.testing.assert_close(
        oracle_cases._hvp_oracle(inputs)(), oracle_cases._hvp_func(inputs)(), rtol=1e-9, atol=1e-11
    )


def test_asv_meta_gradient_suite_builds_from_the_cases():
    """bench/benchmarks/meta_gradient.py: every family's case is a parameter; a missing
    implementation is skipped (NotImplementedError), an existing one runs."""
    suite = load_asv_suite("meta_gradient")
    families = {c.split("/")[0] for c in suite.CASES}
    assert families == {"estimators", "oracle", "policy"}
    case = next(c for c in suite.CASES if c.startswith("estimators/loaded_dice.grad+hvp.tabular"))
    bench = suite.MetaGradient()
    bench.setup(case, "cpu", "cpp")
    bench.time_call(case, "cpu", "cpp")
    with pytest.raises(NotImplementedError):
        bench.setup(case, "cpu", "torch.func-unrolled")
