"""The MetODS synapse benchmark cases (metakern/bench/synapse.py), their scaling table and asv suite.

No timing is asserted; runs use tiny sizes (or the cheap acting step) in quick mode.
"""

from __future__ import annotations

import json

import pytest
import torch
from bench_testing import load_asv_suite
from metakern.bench import harness
from metakern.bench import synapse as sb
from metakern.cli import main
from metakern.ops.synapse import memory_model_bytes

TINY = (3, 6, 8, 2)  # B, T, N, S
TINY_STEP = (3, 8, 2)  # B, N, S


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    monkeypatch.delenv(sb.NAIVE_LIMIT_ENV, raising=False)


def _tiny_cases(dtype=torch.float32):
    return sb.synapse_cases("cpu", dtype, target=TINY, step=TINY_STEP)


def test_family_registers_the_target_cases():
    families = harness.families()
    assert sb.FAMILY in families and sb.SCALING_FAMILY in families
    cases = {c.id: c for c in harness.all_cases("cpu", torch.float32) if c.family.startswith("synapse")}
    target = "B=64,T=200,N=64,S=2"
    assert set(cases) == {
        f"synapse/metods_synapse.fwd+bwd/{target}",
        f"synapse/metods_synapse.fwd/{target}",
        "synapse/metods_step.fwd/B=64,N=64,S=2",
    }  # the scaling sweep is opt-in, and the GPU target is a CUDA case
    fb = cases[f"synapse/metods_synapse.fwd+bwd/{target}"]
    assert [i.name for i in fb.impls] == ["reference", "cpp", "naive-autograd"]
    assert fb.baseline == "naive-autograd" and fb.impl("naive-autograd").kind == "peer"
    assert fb.items == 64 * 200 and fb.bytes_moved > 0
    assert fb.flops == sb.flops(64, 200, 64, 2, backward=True) == 2 * 29 * 64 * 200 * 64 * 64
    for c in cases.values():
        assert c.baseline in [i.name for i in c.impls]
        assert not {"cuda", "triton"} & {i.name for i in c.impls}


def test_cuda_cases_add_the_gpu_target():
    cases = sb.synapse_cases("cuda", torch.float32)  # building cases does not touch the device
    ids = {c.id for c in cases}
    assert "synapse/metods_synapse.fwd+bwd/B=256,T=500,N=64,S=2" in ids
    for c in cases:
        names = [i.name for i in c.impls]
        assert "triton" in names and "reference" in names and "cpp" not in names and "cuda" not in names


def test_scaling_sweep_is_opt_in():
    default = {c.family for c in harness.all_cases("cpu", torch.float32)}
    assert sb.SCALING_FAMILY not in default and sb.FAMILY in default
    assert harness.opted_in(["synapse-scaling/"]) == [sb.SCALING_FAMILY]
    assert harness.opted_in(["synapse/"]) == []
    cases = [c for c in harness.all_cases("cpu", torch.float32, [sb.SCALING_FAMILY]) if c.family == sb.SCALING_FAMILY]
    assert len(cases) == 5 * 3 * 3
    shapes = {sb.parse_shape(c.shape)["N"] for c in cases}
    assert shapes == {16, 32, 64, 128, 256}
    assert "synapse-scaling/metods_synapse.fwd+bwd/B=16,T=5000,N=256,S=4" in {c.id for c in cases}
    assert all([i.name for i in c.impls] == ["cpp", "naive-autograd"] for c in cases)


def test_cases_build_on_cpu():
    fb, fwd, step = _tiny_cases()
    B, T, N, S = TINY
    inp = fb.make_inputs()
    assert inp["v0"].shape == (B, T, N) and inp["W0"].shape == (N, N) and inp["alpha"].shape == (N, N)
    assert inp["kappa"].shape == inp["beta"].shape == (S, S + 1)
    assert all(inp[k].requires_grad for k in sb.LEAVES)
    assert not any(t.requires_grad for t in fwd.make_inputs().values())
    sinp = step.make_inputs()
    assert sinp["v"].shape == (3, 8) and sinp["W"].shape == (3, 8, 8)
    assert sb.parse_shape(step.shape) == {"B": 3, "N": 8, "S": 2}


def test_every_implementation_computes_the_same_thing():
    checked = 0
    for case in _tiny_cases(torch.float64):
        inputs = case.make_inputs()
        want = harness.bound(case.impl(case.baseline), inputs)()
        for impl in case.impls:
            if harness.impl_unavailable(impl, case.device) is not None:
                continue
            got = harness.bound(impl, inputs)()
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10, msg=f"{case.id} {impl.name}")
            checked += 1
    assert checked >= 6  # the naive loop and reference (and cpp where built) in each of three cases


def test_tiny_run_produces_records_with_time_and_memory():
    runner = harness.Runner(settings=harness.QUICK)
    records = runner.run(_tiny_cases())
    rows = {(r["case"], r["backend"]): r for r in records}
    for case, peer in (("metods_synapse.fwd+bwd", "naive-autograd"), ("metods_synapse.fwd", "naive-loop"),
                       ("metods_step.fwd", "naive-loop")):  # fmt: skip
        for backend in ("reference", "cpp", peer, "copy"):
            r = rows[(case, backend)]
            assert r["median_s"] > 0 and r["repeats"] >= harness.QUICK.min_repeats
            assert "peak_mem_bytes" in r
            assert r["baseline"] == peer
        assert rows[(case, peer)]["speedup"] == pytest.approx(1.0)
    if harness.cpu_memory_method() is None:
        assert all(r["peak_mem_bytes"] is not None for r in records)
    sb.annotate(records, {"cpu": 1e12})
    cpp = rows[("metods_synapse.fwd+bwd", "cpp")]
    assert cpp["flops"] == sb.flops(*TINY, backward=True)
    assert cpp["flops_per_s"] == pytest.approx(cpp["flops"] / cpp["median_s"])
    assert cpp["flop_fraction"] == pytest.approx(cpp["flops_per_s"] / 1e12)
    assert "flops" not in rows[("metods_synapse.fwd+bwd", "naive-autograd")]
    assert rows[("metods_step.fwd", "cpp")]["flops"] == sb.flops(3, 1, 8, 2, backward=False)
    lines = sb.target_summary(records)
    assert len(lines) == 2 and all("faster than naive-autograd" in line for line in lines)


def test_cli_runs_the_acting_step(tmp_path):
    path = tmp_path / "step.json"
    rc = main(["bench", "--quick", "-q", "--device", "cpu", "--no-memory", "--only", "synapse/metods_step*",
               "--json", str(path)])  # fmt: skip
    assert rc == 0
    records = json.loads(path.read_text())
    assert {r["backend"] for r in records} == {"reference", "cpp", "naive-loop", "copy"}
    assert all(r["family"] == "synapse" and r["baseline"] == "naive-loop" for r in records)


def test_naive_skip_rule(monkeypatch):
    B, T, N, S = 16, 5000, 256, 4
    assert sb.naive_memory_bytes(B, T, N, S, 4) == B * T * 3 * S * N * N * 4
    assert sb.naive_skip_reason(64, 200, 64, 2, 4, sb.CPU_NAIVE_LIMIT_BYTES) is None  # the target runs
    reason = sb.naive_skip_reason(B, T, N, S, 4, sb.CPU_NAIVE_LIMIT_BYTES)
    assert reason is not None and sb.NAIVE_LIMIT_ENV in reason and "B=16,T=5000,N=256,S=4" in reason
    assert sb.naive_limit_bytes("cpu") == 4 << 30
    # The limit comes from the environment when set; the harness then skips the row with the reason.
    need = sb.naive_memory_bytes(*TINY, 4)
    monkeypatch.setenv(sb.NAIVE_LIMIT_ENV, str(need / 2 / (1 << 30)))
    case = _tiny_cases()[0]
    naive = case.impl("naive-autograd")
    assert harness.impl_unavailable(naive, case.device) == naive.unavailable()
    assert "autograd would save" in naive.unavailable()
    case.impls = [case.impl("cpp"), naive]
    runner = harness.Runner(settings=harness.QUICK, measure_memory=False)
    records = runner.run([case])
    assert [r["backend"] for r in records] == ["cpp", "copy"] and records[0]["speedup"] is None
    assert any("naive-autograd skipped on cpu" in n and sb.NAIVE_LIMIT_ENV in n for n in runner.notes)
    with pytest.raises(NotImplementedError, match="autograd would save"):
        harness.find_runnable([case], case.id, "naive-autograd")
    monkeypatch.setenv(sb.NAIVE_LIMIT_ENV, str(2 * need / (1 << 30)))
    assert naive.unavailable() is None


def _fake(backend, N, S, T, median_s, peak, B=16, kind="backend"):
    return {
        "family": sb.SCALING_FAMILY,
        "case": sb.FWD_BWD,
        "shape": sb.shape_str(B, T, N, S),
        "backend": backend,
        "kind": kind,
        "device": "cpu",
        "dtype": "float32",
        "median_s": median_s,
        "peak_mem_bytes": peak,
        "meta": {"torch_threads": 2},
    }


def test_scaling_table_on_fake_records():
    records = [
        _fake("cpp", 16, 1, 200, 0.002, 3_000_000),
        _fake("naive-autograd", 16, 1, 200, 0.1, 50_000_000, kind="peer"),
        _fake("cpp", 256, 4, 5000, 10.0, 900_000_000),  # the naive loop was skipped here
        _fake("cpp", 64, 2, 1000, 0.5, 40_000_000),  # and not run here (under the limit)
        _fake("copy", 16, 1, 200, 1e-6, 0, kind="copy"),
        {**_fake("cpp", 16, 1, 200, 1.0, 1), "family": "scan"},  # other families are ignored
    ]
    text = sb.scaling_table(records, naive_limit=4 << 30)
    lines = text.splitlines()
    assert "B=16, float32 (cpu, cpp, 2 threads)" in lines[0]
    assert lines[2].startswith("| N | S | T | fused time | GFLOP/s | peak MB | model MB | naive time")
    body = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [line.split("|")[1:4] for line in body] == [
        [" 16 ", " 1 ", " 200 "],
        [" 64 ", " 2 ", " 1000 "],
        [" 256 ", " 4 ", " 5000 "],
    ]
    cells = [c.strip() for c in body[0].split("|")[1:-1]]
    model = memory_model_bytes(16, 200, 16, 1, None, 4, 2)
    gflops = sb.flops(16, 200, 16, 1, True) / 0.002 / 1e9
    assert cells == ["16", "1", "200", "2 ms", f"{gflops:.1f}", "3.0", f"{model / 1e6:.1f}", "100 ms", "50.0", "50x"]
    assert "skipped: saves ~" in body[2] and "> 4.3 GB" in body[2]
    assert "not run (saves ~" in body[1]
    assert sb.scaling_table([]) == ""


def test_target_summary_checks_the_issue_bars():
    shape = sb.shape_str(*sb.TARGET)
    base = {"family": "synapse", "case": sb.FWD_BWD, "shape": shape, "device": "cpu", "dtype": "float32"}
    naive = {**base, "backend": "naive-autograd", "kind": "peer", "median_s": 1.0, "peak_mem_bytes": 1_000_000_000}
    fast = {**base, "backend": "cpp", "kind": "backend", "median_s": 0.05, "peak_mem_bytes": 20_000_000}
    slow = {**fast, "median_s": 0.5, "peak_mem_bytes": 100_000_000}
    (line,) = sb.target_summary(sb.annotate([fast, naive]))
    assert "20x faster" in line and "target >= 10x: met" in line and "target <= 1/20: met" in line
    assert "GFLOP/s" in line
    (line,) = sb.target_summary([slow, naive])
    assert "target >= 10x: NOT met" in line and "target <= 1/20: NOT met" in line


def test_main_formats_an_earlier_run(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps([_fake("cpp", 32, 2, 200, 0.01, 5_000_000)]))
    md = tmp_path / "table.md"
    assert sb.main(["--records", str(path), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "| 32 | 2 | 200 |" in out and md.read_text() in out


def test_main_runs_a_selected_scaling_size(tmp_path, capsys):
    only = "synapse-scaling/*/B=4,T=200,N=16,S=1/*"
    path = tmp_path / "scaling.json"
    rc = sb.main(
        ["--scaling", "--batch", "4", "--device", "cpu", "--only", only, "--no-peak", "-q", "--json", str(path)]
    )
    assert rc == 0
    records = json.loads(path.read_text())
    assert {r["backend"] for r in records} == {"cpp", "naive-autograd", "copy"}
    assert "| 16 | 1 | 200 |" in capsys.readouterr().out


def test_measured_peak_flops_is_positive():
    assert sb.measured_peak_flops("cpu", n=64) > 0


def test_flop_model():
    # metods.h: forward S read passes (s each) + a write (S + 1); backward R recomputes (S + 1 each),
    # the write's adjoint (2S + 3), inner passes (2s - 1 for s = 2..S) and a final pass.
    for S in range(1, 17):
        assert sb.forward_madds(S) == sum(range(1, S + 1)) + S + 1
        for R in (1, 2):
            inner = sum(2 * s - 1 for s in range(2, S + 1))
            assert sb.backward_madds(S, R) == R * (S + 1) + 2 * S + 3 + inner + 3 * S + S * (S - 1) // 2 + 3
    assert (sb.forward_madds(2), sb.backward_madds(2)) == (6, 23)
    assert sb.flops(2, 3, 4, 2, backward=False) == 2 * 6 * 2 * 3 * 16
    # one recompute pass while the checkpoint interval is at most 64 steps, two beyond
    assert sb.recompute_passes(64, 2, 200) == 1 and sb.recompute_passes(64, 2, 200, C=200) == 2
    assert sb.flops(1, 200, 64, 2, True, C=200) - sb.flops(1, 200, 64, 2, True) == 2 * 3 * 200 * 64 * 64


def test_asv_synapse_suite_builds_from_the_cases():
    suite = load_asv_suite("synapse")
    assert not torch.cuda.is_initialized()
    assert set(suite.CASES) >= {c.id for c in sb.synapse_cases("cpu", torch.float32)}
    assert "synapse/metods_synapse.fwd+bwd/B=256,T=500,N=64,S=2" in suite.CASES
    assert {"cpp", "triton", "reference", "naive-autograd", "naive-loop"} <= set(suite.IMPLS)
    case = "synapse/metods_step.fwd/B=64,N=64,S=2"
    bench = suite.Synapse()
    bench.setup(case, "cpu", "cpp")
    bench.time_call(case, "cpu", "cpp")
    bench.peakmem_call(case, "cpu", "cpp")
    with pytest.raises(NotImplementedError):
        bench.setup(case, "cpu", "triton")
    with pytest.raises(NotImplementedError):
        bench.setup("synapse/metods_synapse.fwd+bwd/B=256,T=500,N=64,S=2", "cpu", "cpp")
    ratios = suite.SynapseVsNaive()
    ratios.setup(case, "cpu", "cpp")
    assert ratios.track_speedup(case, "cpu", "cpp") > 0
    frac = ratios.track_peak_mem_fraction(case, "cpu", "cpp")
    assert frac == frac or harness.cpu_memory_method() is not None  # nan only where not measurable
