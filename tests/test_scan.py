"""metakern.linear_scan: every backend against the float64 reference, gradients, opcheck,
torch.compile, and backend selection."""

import itertools
import subprocess
import sys
import warnings

import metakern
import pytest
import torch
from conftest import (
    CPU_BACKENDS,
    FLOAT_DTYPES,
    GRAD_TOLERANCES,
    assert_close_dtype,
    backend_param,
    rel_rms_err,
)
from metakern import _backend
from metakern.ops import linear_scan_reference
from metakern.ops import scan as scan_module

TRITON_MAX_ELEMENTS = 4096  # the interpreter runs a Triton program as numpy code: keep it small
ODD_SIZES = [(B, T) for B in (1, 3, 65) for T in (1, 63, 257)]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def make_inputs(B, T, dtype, *, seed, device="cpu", a_range=(-1.0, 1.0), requires_grad=False):
    """x ~ N(0, 1), a ~ U(a_range), carry ~ N(0, 1); drawn in float64 and then rounded to dtype, so
    the float64 reference sees exactly the values the kernel sees."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, generator=g, dtype=torch.float64)
    a = torch.empty(B, T, dtype=torch.float64).uniform_(*a_range, generator=g)
    c = torch.randn(B, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (x, a, c))


def expected_scan(x, a, c, reverse):
    """The reference in float64 on CPU, from the (rounded) inputs."""
    return linear_scan_reference(*(t.detach().cpu().double() for t in (x, a, c)), reverse)


def grid(backends, dtypes, sizes, triton_max=TRITON_MAX_ELEMENTS, device_type="cpu"):
    """(backend, dtype, B, T) params; Triton only at sizes the interpreter runs quickly."""
    params = []
    for backend in backends:
        marks = backend_param(backend, device_type).marks
        for dtype, (B, T) in itertools.product(dtypes, sizes):
            if backend == "triton" and device_type == "cpu" and B * T > triton_max:
                continue
            params.append(pytest.param(backend, dtype, B, T, marks=marks, id=f"{backend}-{dtype_id(dtype)}-B{B}-T{T}"))
    return params


def seed_of(*parts) -> int:
    return sum((i + 1) * 7919 * int(p) for i, p in enumerate(parts)) % (2**31)


# --------------------------------------------------------------------------------------------
# Forward against the reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(("backend", "dtype", "B", "T"), grid(CPU_BACKENDS, FLOAT_DTYPES, ODD_SIZES))
def test_matches_reference(backend, dtype, B, T, reverse):
    x, a, c = make_inputs(B, T, dtype, seed=seed_of(B, T, reverse))
    with metakern.use_backend(backend):
        y = metakern.linear_scan(x, a, c, reverse=reverse)
    assert y.dtype == dtype and y.shape == (B, T) and y.device == x.device and y.is_contiguous()
    assert_close_dtype(y, expected_scan(x, a, c, reverse), dtype)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(
    ("backend", "dtype", "B", "T"), grid(CPU_BACKENDS, (torch.float64, torch.float32, torch.bfloat16), [(3, 63)])
)
def test_carry_none_is_zero(backend, dtype, B, T, reverse):
    x, a, _ = make_inputs(B, T, dtype, seed=seed_of(B, T, 5))
    with metakern.use_backend(backend):
        y = metakern.linear_scan(x, a, reverse=reverse)
    assert y.dtype == dtype
    assert_close_dtype(y, expected_scan(x, a, torch.zeros(B, dtype=dtype), reverse), dtype)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(("backend", "dtype", "B", "T"), grid(CPU_BACKENDS, (torch.float64, torch.float32), [(3, 63)]))
@pytest.mark.parametrize("scalar", [0.9, 1, -0.5], ids=["float", "int", "negative"])
def test_scalar_a(backend, dtype, B, T, reverse, scalar):
    x, _, c = make_inputs(B, T, dtype, seed=seed_of(B, T, 9))
    with metakern.use_backend(backend):
        y = metakern.linear_scan(x, scalar, c, reverse=reverse)
    a_full = torch.full((B, T), float(scalar), dtype=torch.float64)
    assert_close_dtype(y, expected_scan(x, a_full, c, reverse), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=dtype_id)
def test_scalar_a_is_not_rounded_to_16bit(dtype):
    """A Python-number ``a`` (a discount factor) must act as that number, not as its 16-bit
    rounding: gamma = 0.99 is 0.98828125 in bfloat16, which shortens the effective horizon from
    100 to 85 steps. The scan accumulates in float32, so the result should be within one 16-bit
    rounding of the exact float64 scan."""
    B, T = 3, 257
    x, _, c = make_inputs(B, T, dtype, seed=11)
    y = metakern.linear_scan(x, 0.99, c, reverse=True)
    a_full = torch.full((B, T), 0.99, dtype=torch.float64)
    assert_close_dtype(y, expected_scan(x, a_full, c, True), dtype)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(
    ("backend", "dtype", "B", "T"),
    grid(["cpp"], FLOAT_DTYPES, [(2, 4096), (17, 4099), (5, 4101), (64, 1031)]),
)
def test_long_rows_cpp(backend, dtype, B, T, reverse):
    """Long rows take the SIMD path plus a scalar tail; B*T >= 2**15 splits rows over threads."""
    x, a, c = make_inputs(B, T, dtype, seed=seed_of(B, T, reverse), a_range=(0.5, 1.0))
    with metakern.use_backend(backend):
        y = metakern.linear_scan(x, a, c, reverse=reverse)
    assert y.dtype == dtype
    assert_close_dtype(y, expected_scan(x, a, c, reverse), dtype)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(("backend", "dtype", "B", "T"), grid(CPU_BACKENDS, (torch.float64, torch.float32), [(3, 63)]))
def test_reverse_is_flipped_forward(backend, dtype, B, T, reverse):
    x, a, c = make_inputs(B, T, dtype, seed=seed_of(B, T, 3))
    with metakern.use_backend(backend):
        y = metakern.linear_scan(x, a, c, reverse=reverse)
        y_flip = metakern.linear_scan(x.flip(1).contiguous(), a.flip(1).contiguous(), c, reverse=not reverse)
    assert_close_dtype(y, y_flip.flip(1), dtype)


def _sequential_16bit(x, a):
    """A scan that keeps its running value in the 16-bit storage type (what must NOT happen)."""
    h = torch.zeros(x.shape[0], dtype=x.dtype)
    for t in range(x.shape[1]):
        h = a[:, t] * h + x[:, t]
    return h


@pytest.mark.parametrize(
    ("backend", "dtype", "B", "T"),
    grid(CPU_BACKENDS, (torch.bfloat16, torch.float16), [(2, 4096)], triton_max=0)
    + grid(["triton"], (torch.bfloat16, torch.float16), [(1, 4096)]),
)
def test_16bit_accumulates_in_fp32(backend, dtype, B, T):
    """A running sum of T small increments: a 16-bit accumulator stalls once the increment drops
    below half its spacing (bf16 near 4: 0.03 > 0.01), an fp32 one does not."""
    g = torch.Generator().manual_seed(17)
    x = (0.01 + 0.002 * torch.rand(B, T, generator=g, dtype=torch.float64)).to(dtype)
    a = torch.ones(B, T, dtype=dtype)
    c = torch.zeros(B, dtype=dtype)
    with metakern.use_backend(backend):
        y = metakern.linear_scan(x, a, c)
    assert y.dtype == dtype
    exact = expected_scan(x, a, c, False)
    assert_close_dtype(y, exact, dtype)
    last_err = ((y[:, -1].double() - exact[:, -1]).abs() / exact[:, -1]).max().item()
    assert last_err < 1e-2, f"final value off by {last_err:.2%}"
    # The check above can fail: a 16-bit accumulator is far off at the end of the row.
    naive = _sequential_16bit(x, a).double()
    assert ((naive - exact[:, -1]).abs() / exact[:, -1]).min().item() > 0.1


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------

GRAD_SIZES = {"reference": (3, 7), "cpp": (3, 7), "triton": (2, 5)}


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gradcheck_and_gradgradcheck(cpu_backend, reverse):
    B, T = GRAD_SIZES[cpu_backend]
    inputs = make_inputs(B, T, torch.float64, seed=seed_of(B, T, reverse), requires_grad=True)

    def fn(x, a, c):
        return metakern.linear_scan(x, a, c, reverse=reverse)

    with metakern.use_backend(cpu_backend):
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


def _grads(fn, inputs, gy):
    y = fn(*inputs)
    return y, torch.autograd.grad(y, inputs, gy)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(
    ("backend", "dtype", "B", "T"),
    grid(CPU_BACKENDS, (torch.float64, torch.float32), [(3, 63), (1, 1)])
    + grid(["cpp"], (torch.bfloat16, torch.float16), [(3, 63)]),
)
def test_grads_match_reference_autograd(backend, dtype, B, T, reverse):
    """The op's custom backward against autograd through the reference's Python loop (float64)."""
    x, a, c = make_inputs(B, T, dtype, seed=seed_of(B, T, reverse, 1), requires_grad=True)
    gy = torch.randn(B, T, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with metakern.use_backend(backend):
        _, grads = _grads(lambda *t: metakern.linear_scan(*t, reverse=reverse), (x, a, c), gy.to(dtype))
    ref_inputs = tuple(t.detach().double().requires_grad_() for t in (x, a, c))
    _, ref_grads = _grads(lambda *t: linear_scan_reference(*t, reverse), ref_inputs, gy)
    for name, got, want in zip(("x", "a", "carry"), grads, ref_grads, strict=True):
        assert got.dtype == dtype and got.shape == want.shape, name
        err = rel_rms_err(got, want)
        assert err <= GRAD_TOLERANCES[dtype], f"d{name}: rel RMS error {err:.3e}"
        if dtype == torch.float64:
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(("x", "a", "carry"), r)]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("wanted", SUBSETS, ids=["+".join(s) for s in SUBSETS])
@pytest.mark.parametrize("backend", [backend_param("reference"), backend_param("cpp")])
def test_grad_for_some_inputs_only(backend, wanted, reverse):
    B, T = 4, 9
    inputs = make_inputs(B, T, torch.float64, seed=seed_of(len(wanted), reverse))
    tensors = dict(zip(("x", "a", "carry"), inputs, strict=True))
    for name in wanted:
        tensors[name].requires_grad_()
    gy = torch.randn(B, T, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with metakern.use_backend(backend):
        metakern.linear_scan(tensors["x"], tensors["a"], tensors["carry"], reverse=reverse).backward(gy)
    ref = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    linear_scan_reference(ref["x"], ref["a"], ref["carry"], reverse).backward(gy)
    for name, t in tensors.items():
        if name in wanted:
            torch.testing.assert_close(t.grad, ref[name].grad, atol=1e-10, rtol=1e-10)
        else:
            assert t.grad is None, name


@pytest.mark.parametrize("backend", [backend_param("reference"), backend_param("cpp")])
def test_grad_with_scalar_a_and_no_carry(backend):
    x = torch.randn(3, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    with metakern.use_backend(backend):
        (gx,) = torch.autograd.grad(metakern.linear_scan(x, 0.7, reverse=True).sum(), x)
    # d/dx_s of sum_t y_t for a reverse scan with constant a: sum_{t <= s} a^(s - t).
    s = torch.arange(11, dtype=torch.float64)
    expected = ((1 - 0.7 ** (s + 1)) / (1 - 0.7)).expand(3, 11)
    torch.testing.assert_close(gx, expected, atol=1e-12, rtol=1e-12)


def _hvp(scan, inputs, w, v):
    """Hessian-vector product of sum(w * y^2) at inputs, along v (double backward)."""
    y = scan(*inputs)
    grads = torch.autograd.grad((w * y * y).sum(), inputs, create_graph=True)
    dot = sum((g * vi).sum() for g, vi in zip(grads, v, strict=True))
    return grads, torch.autograd.grad(dot, inputs)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_double_backward_hvp_matches_reference(cpu_backend, reverse):
    B, T = (2, 5) if cpu_backend == "triton" else (3, 17)
    inputs = make_inputs(B, T, torch.float64, seed=seed_of(B, T, reverse, 2), requires_grad=True)
    g = torch.Generator().manual_seed(7)
    w = torch.randn(B, T, generator=g, dtype=torch.float64)
    v = tuple(torch.randn(t.shape, generator=g, dtype=torch.float64) for t in inputs)
    with metakern.use_backend(cpu_backend):
        grads, hv = _hvp(lambda *t: metakern.linear_scan(*t, reverse=reverse), inputs, w, v)
    ref_inputs = tuple(t.detach().clone().requires_grad_() for t in inputs)
    ref_grads, ref_hv = _hvp(lambda *t: linear_scan_reference(*t, reverse), ref_inputs, w, v)
    for got, want in zip(grads + hv, ref_grads + ref_hv, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert all(h.abs().sum() > 0 for h in hv)  # the Hessian is not trivially zero here


# --------------------------------------------------------------------------------------------
# torch.library and torch.compile
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_opcheck(dtype, requires_grad, reverse):
    x, a, c = make_inputs(4, 13, dtype, seed=seed_of(dtype == torch.float64, requires_grad, reverse))
    for t in (x, a, c):
        t.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.metakern.linear_scan.default, (x, a, c, reverse))


def _scan_loss(x, a, c):
    y = metakern.linear_scan(x, a, c, reverse=True)
    return (y * y).mean() + metakern.linear_scan(x, 0.5).sum()


def _gae_loss(rewards, values, dones):
    out = metakern.gae(rewards, values, 0.99, 0.95, dones=dones)
    return (out.advantages.detach() * values).mean() + ((out.returns.detach() - values) ** 2).mean()


def _check_compiled(fn, compiled, inputs):
    eager_inputs = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    want = fn(*eager_inputs)
    got = compiled(*inputs)
    torch.testing.assert_close(got, want)
    diff = [t for t in inputs if t.requires_grad]
    got_grads = torch.autograd.grad(got, diff)
    want_grads = torch.autograd.grad(want, [t for t in eager_inputs if t.requires_grad])
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


def test_compile_linear_scan_fullgraph():
    torch._dynamo.reset()
    x, a, c = make_inputs(4, 33, torch.float32, seed=21, a_range=(0.0, 1.0), requires_grad=True)
    compiled = torch.compile(_scan_loss, fullgraph=True, backend="aot_eager")
    _check_compiled(_scan_loss, compiled, (x, a, c))


def test_compile_dynamic_shapes():
    torch._dynamo.reset()
    compiled = torch.compile(_scan_loss, fullgraph=True, dynamic=True, backend="aot_eager")
    for B, T in [(3, 5), (4, 17), (2, 9)]:
        x, a, c = make_inputs(B, T, torch.float64, seed=seed_of(B, T), requires_grad=True)
        _check_compiled(_scan_loss, compiled, (x, a, c))


def test_compile_gae_fullgraph_inductor():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(22)
    rewards = torch.randn(4, 33, generator=g)
    values = torch.randn(4, 33, generator=g).requires_grad_()
    dones = torch.rand(4, 33, generator=g) < 0.1
    compiled = torch.compile(_gae_loss, fullgraph=True, backend="inductor")
    _check_compiled(_gae_loss, compiled, (rewards, values, dones))


# --------------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------------


def _spy_backend(monkeypatch, name):
    """Count calls into one implementation of the op."""
    calls = []
    impl = scan_module._IMPLS[name]

    def spy(*args):
        calls.append(name)
        return impl(*args)

    monkeypatch.setitem(scan_module._IMPLS, name, spy)
    return calls


def test_use_backend_context_manager_restores(monkeypatch):
    calls = _spy_backend(monkeypatch, "reference")
    x = torch.randn(2, 5)
    before = metakern.current_backend()
    with metakern.use_backend("reference") as ctx:
        assert metakern.current_backend() == "reference"
        assert ctx.name == "reference"
        with metakern.use_backend("cpp"):
            assert metakern.current_backend() == "cpp"
            metakern.linear_scan(x, 0.5)
        assert metakern.current_backend() == "reference"
        metakern.linear_scan(x, 0.5)
    assert metakern.current_backend() == before
    assert calls == ["reference"]


def test_use_backend_plain_call_persists(monkeypatch):
    calls = _spy_backend(monkeypatch, "reference")
    before = metakern.current_backend()
    try:
        metakern.use_backend("reference")
        assert metakern.current_backend() == "reference"
        metakern.linear_scan(torch.randn(2, 5), 0.5)
        assert _backend.select("linear_scan", "cpu") == "reference"
    finally:
        metakern.use_backend(before)
    assert metakern.current_backend() == before
    assert calls == ["reference"]


@pytest.mark.parametrize("name", ["numpy", "", "CPP", None, 3])
def test_use_backend_rejects_unknown_names(name):
    before = metakern.current_backend()
    with pytest.raises(ValueError, match="backend must be one of"):
        metakern.use_backend(name)
    assert metakern.current_backend() == before


def test_forced_backend_that_cannot_run_raises():
    x = torch.randn(2, 5)
    with metakern.use_backend("cuda"), pytest.raises(RuntimeError, match=r"forced backend 'cuda'.*CUDA tensors"):
        metakern.linear_scan(x, 0.5)
    with metakern.use_backend("cpp"), pytest.raises(RuntimeError, match=r"forced backend 'cpp'.*CPU tensors"):
        metakern.linear_scan(torch.randn(2, 5, device="meta"), 0.5)


@pytest.mark.triton
def test_forced_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with metakern.use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        metakern.linear_scan(torch.randn(2, 5), 0.5)


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)


def test_env_var_sets_initial_backend():
    code = (
        "import metakern, torch\n"
        "from metakern import _backend\n"
        "print(metakern.current_backend(), _backend.select('linear_scan', 'cpu'))\n"
    )
    out = _run_python(code, METAKERN_BACKEND="reference")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["reference", "reference"]
    bad = _run_python("import metakern", METAKERN_BACKEND="fastest")
    assert bad.returncode != 0
    assert "METAKERN_BACKEND must be one of" in bad.stderr


def test_falls_back_to_reference_with_one_warning(monkeypatch):
    """Simulate a missing C++ module through the module cache: auto picks the reference, warns once."""
    monkeypatch.setitem(_backend._modules, "metakern._C", None)
    monkeypatch.setitem(_backend._errors, "metakern._C", "simulated: not built")
    monkeypatch.setattr(_backend, "_warned", set())
    calls = _spy_backend(monkeypatch, "reference")
    x, a, c = make_inputs(3, 10, torch.float64, seed=4)
    with metakern.use_backend("auto"):
        assert _backend.unavailable_reason("cpp", "cpu") is not None
        with pytest.warns(RuntimeWarning, match=r"falls back to the slow PyTorch reference.*simulated: not built"):
            y = metakern.linear_scan(x, a, c)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y2 = metakern.linear_scan(x, a, c, reverse=True)
        assert _backend.active_backends()["cpu"] == "reference"
    assert calls == ["reference", "reference"]
    assert_close_dtype(y, expected_scan(x, a, c, False), torch.float64)
    assert_close_dtype(y2, expected_scan(x, a, c, True), torch.float64)


def test_auto_picks_cpp_on_cpu():
    if _backend.unavailable_reason("cpp", "cpu") is not None:
        pytest.skip(_backend.unavailable_reason("cpp", "cpu"))
    with metakern.use_backend("auto"):
        assert _backend.select("linear_scan", "cpu") == "cpp"
        assert _backend.active_backends()["cpu"] == "cpp"


# --------------------------------------------------------------------------------------------
# CUDA devices (skipped without a GPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(
    ("backend", "dtype", "B", "T"),
    grid(
        ["cuda", "triton"],
        FLOAT_DTYPES,
        [*ODD_SIZES, (2, 4096), (7, 5000), (1, 70001)],
        device_type="cuda",
    ),
)
def test_cuda_matches_reference(backend, dtype, B, T, reverse):
    x, a, c = make_inputs(B, T, dtype, seed=seed_of(B, T, reverse), device="cuda", a_range=(0.5, 1.0))
    with metakern.use_backend(backend):
        y = metakern.linear_scan(x, a, c, reverse=reverse)
    assert y.dtype == dtype and y.device == x.device and y.shape == (B, T)
    assert_close_dtype(y, expected_scan(x, a, c, reverse), dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_cuda_large_batch(gpu_backend, reverse):
    """B > 65535: rows must sit on grid axis x (a grid's y/z axes stop at 65535)."""
    B, T = 70000, 8
    x, a, c = make_inputs(B, T, torch.float32, seed=seed_of(B, T, reverse), device="cuda")
    with metakern.use_backend(gpu_backend):
        y = metakern.linear_scan(x, a, c, reverse=reverse)
    assert_close_dtype(y, expected_scan(x, a, c, reverse), torch.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_cuda_gradcheck(gpu_backend, reverse):
    inputs = make_inputs(3, 7, torch.float64, seed=seed_of(3, 7, reverse), device="cuda", requires_grad=True)

    def fn(x, a, c):
        return metakern.linear_scan(x, a, c, reverse=reverse)

    with metakern.use_backend(gpu_backend):
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.cuda
def test_cuda_auto_picks_a_gpu_backend():
    x, a, c = make_inputs(3, 65, torch.float32, seed=8, device="cuda")
    with metakern.use_backend("auto"):
        assert _backend.select("linear_scan", "cuda") in ("cuda", "triton")
        y = metakern.linear_scan(x, a, c)
    assert_close_dtype(y, expected_scan(x, a, c, False), torch.float32)


@pytest.mark.cuda
def test_cuda_rejects_cpu_backend_and_device_mix():
    x = torch.randn(2, 5, device="cuda")
    with metakern.use_backend("cpp"), pytest.raises(RuntimeError, match="CPU tensors"):
        metakern.linear_scan(x, 0.5)
    with pytest.raises(ValueError, match=r"^a:"):
        metakern.linear_scan(x, torch.rand(2, 5))
