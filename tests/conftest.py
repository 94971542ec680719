"""Shared test set-up: Triton under its CPU interpreter, backend lists, error metrics, tolerances.

TRITON_INTERPRET must be set before ``triton.jit`` decorates the kernels (when
``metakern.kernels`` is imported), so it is decided here, before anything imports them. Without a
GPU it is 1: the Triton kernels then run on CPU tensors under the interpreter, at small sizes. On a
machine with a CUDA device it defaults to 0, so the compiled Triton kernels are tested on CUDA
tensors (the CPU-interpreter tests then skip); an explicit ``TRITON_INTERPRET`` always wins.
"""

import os

if "TRITON_INTERPRET" not in os.environ:
    import torch  # importing torch does not import triton

    os.environ["TRITON_INTERPRET"] = "0" if torch.cuda.is_available() else "1"

import pytest
import torch
from metakern import _backend

CPU_BACKENDS = ("reference", "cpp", "triton")
GPU_BACKENDS = ("cuda", "triton")
FLOAT_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)

# Per storage dtype: ``rms`` bounds rel_rms_err against a float64 reference computed from the same
# (already rounded) inputs; ``atol``/``rtol`` are for elementwise checks. 16-bit outputs are
# rounded once to 8 (bf16) or 11 (fp16) significant bits, so an fp32-accumulated scan lands within
# about one rounding of the exact value.
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rms": 1e-12, "atol": 1e-10, "rtol": 1e-10},
    torch.float32: {"rms": 1e-6, "atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"rms": 2e-3, "atol": 1e-2, "rtol": 5e-3},
    torch.bfloat16: {"rms": 1e-2, "atol": 5e-2, "rtol": 2e-2},
}

# Gradients pass through a second scan and a product, so they get a little more room.
GRAD_TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-11,
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}


def rel_rms_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, in float64 (the metric fla's tests use)."""
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    e = expected.detach().to(device="cpu", dtype=torch.float64)
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    assert torch.isfinite(a).all(), "non-finite values in the result"
    denom = e.norm().item()
    return (a - e).norm().item() / (denom if denom > 0 else 1.0)


def assert_close_dtype(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """Relative-RMS check against the per-dtype tolerance, plus elementwise for float64."""
    err = rel_rms_err(actual, expected)
    tol = TOLERANCES[dtype]
    assert err <= tol["rms"], f"rel RMS error {err:.3e} > {tol['rms']:.1e} for {dtype}"
    if dtype == torch.float64:
        torch.testing.assert_close(
            actual.detach().cpu(), expected.detach().cpu().to(actual.dtype), atol=tol["atol"], rtol=tol["rtol"]
        )


def backend_param(name: str, device_type: str = "cpu"):
    """A pytest.param for a backend, skipped with the backend's own reason when it cannot run here."""
    marks = [pytest.mark.triton] if name == "triton" else []
    if device_type == "cuda":
        marks.append(pytest.mark.cuda)  # skips the test on machines without a GPU
    if device_type == "cpu" or torch.cuda.is_available():
        reason = _backend.unavailable_reason(name, device_type)
        if reason is not None:
            marks.append(pytest.mark.skip(reason=f"{name} on {device_type}: {reason}"))
    return pytest.param(name, marks=marks, id=name)


def usable_cpu_backends() -> list[str]:
    """The backends that can run on CPU tensors in this process."""
    return [b for b in CPU_BACKENDS if _backend.unavailable_reason(b, "cpu") is None]


@pytest.fixture(params=[backend_param(b) for b in CPU_BACKENDS])
def cpu_backend(request) -> str:
    return request.param


@pytest.fixture(params=[backend_param(b, "cuda") for b in GPU_BACKENDS])
def gpu_backend(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _restore_backend():
    """Tests may force a backend with a plain call; none may leak it into the next test."""
    before = _backend.current_backend()
    yield
    if _backend.current_backend() != before:
        _backend.use_backend(before)


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    skip_triton = pytest.mark.skip(reason="triton is not installed")
    has_cuda = torch.cuda.is_available()
    has_triton = _backend.triton_installed()
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)
        if "triton" in item.keywords and not has_triton:
            item.add_marker(skip_triton)


@pytest.fixture
def one_thread():
    """Algorithm runs are hundreds of tiny per-step ops: torch's intra-op pool only adds spin-waits
    (badly so when xdist workers share the cores), so their tests run on one thread
    (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def at_isa_levels(script: str, levels: tuple[str, ...], timeout: float = 300) -> dict[str, tuple[str, object]]:
    """Run a Python script once per instruction-set level, each in a fresh process with
    METAKERN_MAX_ISA=level (read once per process; common/cpu_features.h):
    {level: (stdout, what the script torch.save'd to sys.argv[1])}. A level above the CPU's runs
    the CPU's own."""
    import subprocess
    import sys

    results = {}
    for level in levels:
        path = f"{os.environ.get('TMPDIR', '/tmp')}/metakern-isa-{os.getpid()}-{level}.pt"
        env = dict(os.environ, METAKERN_MAX_ISA=level)
        env.pop("METAKERN_DISABLE_AVX512", None)
        run = subprocess.run([sys.executable, "-c", script, path], env=env, capture_output=True, text=True,
                             timeout=timeout)  # fmt: skip
        assert run.returncode == 0, run.stderr
        results[level] = (run.stdout, torch.load(path))
        os.remove(path)
    return results
