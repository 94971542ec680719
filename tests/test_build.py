"""What was built: the C++ module, the CUDA module where CI requires it, `metakern info`, and the
raw bindings' own argument checks."""

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import metakern
import pytest
import torch
from metakern import _backend, cli, info

REQUIRE_CUDA_BUILD = os.environ.get("METAKERN_REQUIRE_CUDA_BUILD", "0") == "1"


def test_cpp_module_imports():
    cpp = importlib.import_module("metakern._C")
    assert cpp.__version__ == metakern.__version__
    assert cpp.simd_isa() in ("avx512", "avx2", "sse2")
    assert cpp.omp_max_threads() >= 1
    assert _backend.cpp_module() is cpp
    assert _backend.load_error("metakern._C") is None
    with metakern.use_backend("auto"):
        facts = info.collect()
    assert facts["cpp_module"].startswith("built ("), facts["cpp_module"]
    assert facts["backend[cpu]"] == "cpp"


@pytest.mark.skipif(not REQUIRE_CUDA_BUILD, reason="METAKERN_REQUIRE_CUDA_BUILD=1 not set (CI sets it)")
def test_cuda_module_was_built():
    """Linked with the static CUDA runtime, the module loads on machines without a GPU or driver."""
    cuda = importlib.import_module("metakern._C_cuda")
    assert cuda.__version__ == metakern.__version__
    archs = cuda.archs.split(",")
    assert "80" in archs and "90" in archs, cuda.archs
    count = cuda.device_count()
    assert isinstance(count, int) and count >= 0
    if not torch.cuda.is_available():
        assert count == 0
    assert cuda.runtime_version() >= 11000
    facts = info.collect()
    assert facts["cuda_module"].startswith("built (CUDA runtime"), facts["cuda_module"]
    assert "sm_80" in facts["cuda_module"] and "sm_90" in facts["cuda_module"]


def _cuobjdump() -> str | None:
    """The CUDA toolkit's cuobjdump, else the one Triton ships."""
    nvcc = os.environ.get("CUDACXX") or shutil.which("nvcc")
    candidates = [Path(nvcc).resolve().parent / "cuobjdump"] if nvcc else []
    if importlib.util.find_spec("triton.backends.nvidia") is not None:
        candidates.append(Path(importlib.util.find_spec("triton.backends.nvidia").origin).parent / "bin" / "cuobjdump")
    return next((str(c) for c in candidates if c.is_file()), shutil.which("cuobjdump"))


@pytest.mark.skipif(not REQUIRE_CUDA_BUILD, reason="METAKERN_REQUIRE_CUDA_BUILD=1 not set (CI sets it)")
@pytest.mark.skipif(_cuobjdump() is None, reason="no cuobjdump (CUDA toolkit or Triton's NVIDIA backend)")
def test_cuda_kernels_neither_spill_nor_use_a_stack():
    """Every kernel in the CUDA module, for each architecture built, keeps its state in registers:
    no local memory (spills) and no stack frame, read from the cubins' resource usage."""
    cuda = importlib.import_module("metakern._C_cuda")
    text = subprocess.run(
        [_cuobjdump(), "--dump-resource-usage", cuda.__file__], capture_output=True, text=True, check=True
    ).stdout
    kernels, arch, name = [], None, None
    for line in text.splitlines():
        if m := re.search(r"arch = (sm_\d+)", line):
            arch = m[1]
        elif m := re.search(r"Function (\S+):", line):
            name = m[1]
        elif m := re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line):
            kernels.append((arch, name, int(m[1]), int(m[2]), int(m[4])))
    assert {k[0] for k in kernels} >= {"sm_80", "sm_90"}, text[:2000]
    assert any("env_step_kernel" in k[1] for k in kernels) and any("linear_scan" in k[1] for k in kernels)
    bad = [k for k in kernels if k[3] or k[4]]
    assert not bad, bad


def test_info_cli_prints_backends(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    rows = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert rows["backend[cpu]"].strip() == _backend.active_backends()["cpu"]
    assert rows["metakern"].strip() == metakern.__version__
    assert "cpp_module" in rows and "triton" in rows


def _raw_args(dtype_code=0, B=2, T=3):
    x = torch.randn(B, T)
    a = torch.rand(B, T)
    c = torch.zeros(B)
    y = torch.empty(B, T)
    return [dtype_code, x.data_ptr(), a.data_ptr(), c.data_ptr(), y.data_ptr(), B, T, False], (x, a, c, y)


def _raw_modules():
    mods = [pytest.param("metakern._C", id="cpp")]
    if REQUIRE_CUDA_BUILD or _backend.cuda_module() is not None:
        mods.append(pytest.param("metakern._C_cuda", id="cuda"))
    return mods


def _call_raw(module_name, args):
    mod = importlib.import_module(module_name)
    # time_major, then num_threads (CPU) | device, stream (CUDA)
    extra = [False, 1] if module_name.endswith("_C") else [False, 0, 0]
    return mod.linear_scan(*args, *extra)


@pytest.mark.parametrize("module_name", _raw_modules())
@pytest.mark.parametrize(
    ("index", "value", "pattern"),
    [
        (0, 4, "unknown dtype code 4"),
        (0, -1, "unknown dtype code -1"),
        (5, 0, "sizes must be positive"),
        (6, 0, "sizes must be positive"),
        (5, -3, "sizes must be positive"),
        (1, 0, "null pointer for x"),
        (2, 0, "null pointer for a"),
        (3, 0, "null pointer for carry"),
        (4, 0, "null pointer for y"),
    ],
    ids=["dtype4", "dtype-1", "B0", "T0", "B-3", "null-x", "null-a", "null-carry", "null-y"],
)
def test_raw_binding_rejects_bad_arguments(module_name, index, value, pattern):
    """The checks run before any kernel (or any CUDA call), so they work without a GPU."""
    args, keep = _raw_args()
    args[index] = value
    with pytest.raises(ValueError, match=pattern):
        _call_raw(module_name, args)
    del keep


def test_raw_cpp_binding_computes_the_scan():
    args, (x, a, c, y) = _raw_args(B=3, T=9)
    _call_raw("metakern._C", args)
    expected = metakern.ops.linear_scan_reference(x, a, c)
    torch.testing.assert_close(y, expected)
