"""tests/gpu_sanitize.py (the compute-sanitizer driver of `bench/gpu_session.sh sanitize`) stays
runnable: its CPU dry run (Triton under the interpreter against C++, the C++ environments against
the numpy reference) finds no mismatch."""

import gpu_sanitize
import pytest

pytestmark = pytest.mark.triton


def test_gpu_sanitize_dry_run(capsys):
    assert gpu_sanitize.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert all(f"{part}:" in out for part in ("scan", "estimators", "policy", "synapse", "envs")), out
    assert "0 mismatches" in out
