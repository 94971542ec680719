"""Every Triton kernel compiles for sm_90 (H100) without spilling beyond what is documented.

The other Triton tests run the kernels under the CPU interpreter, which does not compile them;
``tests/triton_aot.py`` compiles each launch the ops make, ahead of time, with Triton's compiler
and ptxas. It needs Triton's NVIDIA backend, not a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton


def _nvidia_backend() -> bool:
    return (
        importlib.util.find_spec("triton") is not None
        and importlib.util.find_spec("triton.backends.nvidia") is not None
    )


@pytest.mark.skipif(not _nvidia_backend(), reason="Triton with its NVIDIA backend is not installed")
def test_every_triton_kernel_compiles_for_sm90():
    tool = Path(__file__).resolve().parent / "triton_aot.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(tool), "--arch", "90", "-q", "--jobs", "2"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert " 0 failed" in proc.stdout
