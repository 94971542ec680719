"""Compile every Triton kernel for real GPUs, on a machine without one.

The tests run the Triton kernels under the CPU interpreter, which checks their arithmetic but not
whether they compile: the interpreter accepts block shapes and register tiles that the GPU compiler
rejects or spills. This tool drives the public ops (forward, gradient and Hessian-vector product,
with the Triton backend forced) on CPU tensors, records every kernel launch instead of running it,
and compiles each distinct specialization ahead of time for an NVIDIA target, through Triton's own
launch path (argument specialization, options) down to a cubin. ptxas then reports each kernel's
registers and spill bytes per thread, and Triton its shared memory.

    python tests/triton_aot.py [--arch 90] [--arch 80] [--arch 100] [--full] [--jobs N] [--only synapse] [-q]

Exit status 1 when a kernel does not compile, needs more shared memory or registers than the
target has, or spills more than ``spill_budget`` allows (kernels are expected not to spill, apart
from the cases ``metakern.kernels.synapse`` documents; judged only with the Triton version the
budget was measured with, ``SPILLS_MEASURED_WITH``). The default cases cover every kernel at the
issues' target sizes (102 kernels, half a minute on 2 cores; without ``--only`` the tool fails if
a kernel of ``metakern.kernels`` is never launched); ``--full`` adds the other dtypes, flags,
activations and sizes (460 per target). The figures are those of the installed Triton's
compiler, which may differ from the one on a GPU machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ["TRITON_INTERPRET"] = "0"  # real JIT functions, not the interpreter's (before Triton is imported)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's current default, without its warning

import metakern
import torch
import triton
from metakern import _backend
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

# Per-SM limits of the targets (CUDA programming guide, compute capabilities table).
LIMITS = {
    80: {"shared": 163 * 1024, "regs": 65536},
    90: {"shared": 227 * 1024, "regs": 65536},
    100: {"shared": 227 * 1024, "regs": 65536},
}


SPILL_TOLERANCE = 32  # bytes per thread: the few words ptxas sometimes keeps in local memory on its own
# The spill figures (and the synapse kernels' documented list) were measured with this Triton; other
# versions place registers differently, so with them spills are reported but not judged (compile
# errors and resource limits still are): a new Triton release cannot turn CI red on its own.
SPILLS_MEASURED_WITH = "3.9."


def spill_budget(kernel: str, case: str) -> int | None:
    """Most spill bytes per thread a kernel may have in a case; None where spilling is documented.
    ``metakern.kernels.synapse`` documents its spills: fp64, S > 2 and the N = 128 (BN = 128)
    on-chip forward. Every other kernel is expected not to spill."""
    if case.startswith("synapse"):
        m = re.search(r"N=(\d+),S=(\d+),(\w+)", case)
        N, S, dtype = int(m[1]), int(m[2]), m[3]
        if dtype == "float64" or S > 2 or (kernel == "_fwd_onchip_kernel" and triton.next_power_of_2(N) > 64):
            return None
    return SPILL_TOLERANCE


# --------------------------------------------------------------------------------------------------
# A driver that reports a GPU target, so that Triton's own launch path (argument specialization,
# options, caching) compiles for it; nothing is ever launched.


class _TargetDriver:
    def __init__(self, arch: int):
        self.arch = arch

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", self.arch, 32)

    def get_current_device(self) -> int:
        return self.arch  # one JIT cache per target

    def get_current_stream(self, device=None) -> int:
        return 0

    def is_active(self) -> bool:
        return True


@dataclass
class Launch:
    case: str
    kernel: JITFunction
    args: tuple
    kwargs: dict


@dataclass
class Result:
    case: str
    kernel: str
    arch: int
    warps: int = 0
    regs: int = 0
    spill: int = 0
    shared: int = 0
    seconds: float = 0.0
    config: str = ""  # the launch's compile-time arguments
    errors: list[str] = field(default_factory=list)


_launches: list[Launch] = []
_current_case = ["?"]


def _kernels() -> list[JITFunction]:
    """Every kernel (a ``*_kernel`` JIT function; the others are helpers they call) of every module
    of ``metakern.kernels``."""
    import importlib
    import pkgutil

    import metakern.kernels as pkg

    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        found += [obj for name, obj in vars(mod).items() if isinstance(obj, JITFunction) and name.endswith("_kernel")]
    return found


def _install_recorder() -> None:
    """Each kernel's launch is recorded, arguments and all (the compiler looks at their dtypes,
    alignment and integer values), and not run."""
    for fn in _kernels():

        def record(*args, grid, warmup, _fn=fn, **kwargs):
            _launches.append(Launch(_current_case[0], _fn, args, kwargs))

        fn.run = record
    # The ops accept CPU tensors for the Triton backend only under the interpreter; here the kernels
    # never run, so let them through.
    _backend.triton_interpreted = lambda: True


# --------------------------------------------------------------------------------------------------
# The cases: public ops, forward + gradient + HVP, Triton backend forced.


def _hvp(out: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    grads = torch.autograd.grad(out.sum(), inputs, create_graph=True, allow_unused=True)
    used = [(g, x) for g, x in zip(grads, inputs, strict=True) if g is not None]
    vs = [torch.ones_like(x) for _, x in used]
    torch.autograd.grad([g for g, _ in used], [x for _, x in used], vs, allow_unused=True)


def cases(full: bool) -> list[tuple[str, Callable[[], None]]]:
    """(label, thunk) pairs; a label starts with its family (what ``--only`` selects)."""
    out: list[tuple[str, Callable[[], None]]] = []
    dtypes = [torch.float32, torch.float64]

    # linear_scan (and through it the GAE op): both layouts, both directions, fp32 / fp64 / bf16.
    for dtype in [*dtypes, torch.bfloat16]:
        for time_major in (False, True):
            for B, T in [(4096, 256)] + ([(1, 1), (3, 5000)] if full else []):

                def run(B=B, T=T, dtype=dtype, time_major=time_major):
                    shape = (T, B) if time_major else (B, T)
                    x = torch.randn(shape, dtype=dtype, requires_grad=True)
                    a = torch.rand(shape, dtype=dtype, requires_grad=True)
                    y = metakern.linear_scan(x, a, reverse=False, time_major=time_major)
                    y.sum().backward()
                    metakern.linear_scan(x.detach(), a.detach(), reverse=True, time_major=time_major)

                out.append((f"scan B={B},T={T},{_name(dtype)},time_major={time_major}", run))

    # Estimator ops: value, gradient and HVP, with and without done masks.
    from metakern import estimators as est

    kinds = {
        "maml_surrogate": lambda lp, bl, r, v, d: est.maml_surrogate(lp, r, 0.9, dones=d),
        "dice": lambda lp, bl, r, v, d: est.dice(lp, r, 0.9, dones=d),
        "dice_baseline": lambda lp, bl, r, v, d: est.dice_baseline(lp, r, v, 0.9, dones=d),
        "loaded_dice": lambda lp, bl, r, v, d: est.loaded_dice(lp, r, 0.9, 0.95, dones=d),
        "lvc": lambda lp, bl, r, v, d: est.lvc(lp, r, 0.9, dones=d),
        "off_policy_dice": lambda lp, bl, r, v, d: est.off_policy_dice(lp, bl, r, 0.9, dones=d),
    }
    for dtype in dtypes:
        for kind, f in kinds.items():
            for with_dones in (True, False) if full or kind == "dice" else (True,):

                def run(f=f, dtype=dtype, with_dones=with_dones):
                    B, T = 1024, 200
                    lp = torch.randn(B, T, dtype=dtype).requires_grad_()
                    bl, r, v = (torch.randn(B, T, dtype=dtype) for _ in range(3))
                    d = torch.rand(B, T) < 0.05 if with_dones else None
                    _hvp(f(lp, bl, r, v, d), [lp])

                out.append((f"estimators {kind},{_name(dtype)},dones={with_dones}", run))

    # Softmax policy ops, tabular and linear: value, gradient and HVP in every argument.
    from metakern import policy as pol

    for dtype in dtypes:
        for S, A in [(20, 5)] + ([(7, 3), (64, 18)] if full else []):

            def run(S=S, A=A, dtype=dtype):
                N, B, T = 64, 32, 128
                theta = torch.randn(N, S, A, dtype=dtype, requires_grad=True)
                states, actions = torch.randint(0, S, (N, B, T)), torch.randint(0, A, (N, B, T))
                _hvp(pol.tabular_log_prob(theta, states, actions), [theta])  # a loss linear in the log-probs
                _hvp(pol.tabular_log_prob(theta, states, actions).square(), [theta])  # and one that is not

            out.append((f"policy tabular S={S},A={A},{_name(dtype)}", run))
        for F, A in [(32, 5)] + ([(7, 3), (128, 18)] if full else []):

            def run(F=F, A=A, dtype=dtype):
                N, B, T = 16, 16, 128
                w = torch.randn(N, F, A, dtype=dtype, requires_grad=True)
                x = torch.randn(N, B, T, F, dtype=dtype, requires_grad=True)
                actions = torch.randint(0, A, (N, B, T))
                _hvp(pol.linear_softmax_log_prob(w, x, actions), [w, x])
                _hvp(pol.linear_softmax_log_prob(w, x, actions).square(), [w, x])
                _hvp(pol.linear_softmax_log_prob(w, x.detach(), actions), [w])
                _hvp(pol.linear_softmax_log_prob(w.detach(), x, actions), [x])

            out.append((f"policy linear F={F},A={A},{_name(dtype)}", run))

    # MetODS synapse op: forward and backward over sizes on chip and streamed.
    sizes = [(64, 2), (128, 2), (256, 2), (16, 1), (64, 4)]
    if full:
        sizes += [(N, S) for N in (16, 32, 64, 128, 256) for S in (1, 2, 4) if (N, S) not in sizes] + [(33, 3)]
    for N, S in sizes:
        for dtype in [torch.float32] + ([torch.float64, torch.bfloat16] if full or (N, S) == (64, 2) else []):
            for variant in ["plain", "reset,shared-W0"] + (["relu", "identity", "C=100"] if full else []):

                def run(N=N, S=S, dtype=dtype, variant=variant):
                    B, T = 4, 12
                    v0 = torch.randn(B, T, N, dtype=dtype, requires_grad=True)
                    state = torch.float32 if dtype == torch.bfloat16 else dtype  # fp32 state for bf16 inputs
                    W0 = torch.randn(N, N) if "shared-W0" in variant else torch.randn(B, N, N)
                    W0 = W0.to(state).requires_grad_()
                    alpha = torch.randn(N, N, dtype=state, requires_grad=True)
                    kappa = torch.randn(S, S + 1, dtype=state, requires_grad=True)
                    beta = torch.randn(S, S + 1, dtype=state, requires_grad=True)
                    reset = torch.rand(B, T) < 0.2 if "reset" in variant else None
                    act = variant if variant in ("relu", "identity") else "tanh"
                    C = 100 if variant == "C=100" else 5
                    if variant == "C=100":
                        v0 = torch.randn(B, 250, N, dtype=dtype, requires_grad=True)
                    vS, WT = metakern.metods_synapse(
                        v0, W0, alpha, kappa, beta, reset, activation=act, checkpoint_every=C
                    )
                    torch.autograd.grad(vS.float().sum() + WT.float().sum(), [v0, W0, alpha, kappa, beta])

                out.append((f"synapse fwd+bwd N={N},S={S},{_name(dtype)},{variant}", run))
    return out


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------------------------------
# Compilation


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself runs for ``arch`` (it ships more than one)."""
    from triton.backends.nvidia import compiler

    get = getattr(compiler, "get_ptxas", None)
    if get is None:
        return os.path.join(os.path.dirname(compiler.__file__), "bin", "ptxas")
    try:
        tool = get(arch)
    except TypeError:  # Triton 3.4 and 3.5 take no architecture
        tool = get()
    return tool[0] if isinstance(tool, tuple) else tool.path  # (path, version) before 3.4


def _resources(ptx: str, arch: int) -> dict[str, int]:
    """ptxas's report for the kernel's PTX (the assembly Triton compiled): registers and spill
    bytes per thread."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"  # as Triton names Hopper
        cmd = [_ptxas(arch), "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}", src, "-o", os.path.join(tmp, "k.o")]
        text = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if regs is None or spill is None:
        raise RuntimeError(f"cannot read ptxas's resource report:\n{text}")
    return {"regs": int(regs[1]), "spill": max(int(spill[1]), int(spill[2]))}


def _compile(index: int, arch: int) -> Result:
    launch = _launches[index]
    name = launch.kernel.fn.__name__
    config = ",".join(
        f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in launch.kwargs.items() if k != "num_stages"
    )
    res = Result(launch.case, name, arch, config=config)
    driver.set_active(_TargetDriver(arch))
    start = time.perf_counter()
    try:
        kernel = JITFunction.run(launch.kernel, *launch.args, grid=(1,), warmup=True, **launch.kwargs)
    except Exception as e:  # any compiler error is the finding
        res.errors.append(f"does not compile: {type(e).__name__}: {str(e).strip()[:2000]}")
        return res
    res.seconds = time.perf_counter() - start
    md = kernel.metadata
    usage = _resources(kernel.asm["ptx"], arch)
    res.warps, res.regs, res.spill = md.num_warps, usage["regs"], usage["spill"]
    res.shared = md.shared
    limits = LIMITS[arch]
    threads = 32 * md.num_warps * md.num_ctas
    if res.shared > limits["shared"]:
        res.errors.append(f"needs {res.shared} B of shared memory, sm_{arch} has {limits['shared']}")
    if res.regs * threads > limits["regs"]:
        res.errors.append(f"{res.regs} registers x {threads} threads exceed sm_{arch}'s {limits['regs']}")
    return res


def _key(launch: Launch, arch: int) -> str:
    """Triton's own specialization of the launch (what decides whether two launches compile alike)."""
    driver.set_active(_TargetDriver(arch))
    fn = launch.kernel
    kwargs = dict(launch.kwargs)
    kwargs.setdefault("debug", False)
    try:
        *_, binder = fn.device_caches[arch]
        _, specialization, options = binder(*launch.args, **kwargs)
    except (AttributeError, TypeError):  # another Triton's internals: one compile per case and kernel
        return f"{arch}|{fn.fn.__name__}|{launch.case}"
    opts = sorted(options.items()) if isinstance(options, dict) else options
    return f"{arch}|{fn.fn.__name__}|{specialization}|{opts}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, action="append", choices=sorted(LIMITS), help="compute capability x 10")
    p.add_argument("--full", action="store_true", help="every combination, not the default cover")
    p.add_argument("--only", help="comma-separated families (scan, estimators, policy, synapse)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    args = p.parse_args(argv)
    archs = args.arch or [90]
    families = set(args.only.split(",")) if args.only else None

    _install_recorder()
    with metakern.use_backend("triton"):
        for label, thunk in cases(args.full):
            if families and label.split()[0] not in families:
                continue
            _current_case[0] = label
            thunk()
    if not families:  # the cases must reach every kernel, or one could go unchecked
        missing = {fn.fn.__name__ for fn in _kernels()} - {launch.kernel.fn.__name__ for launch in _launches}
        if missing:
            print(f"no case launches {sorted(missing)}: add one to cases()")
            return 1
    jobs: list[tuple[int, int]] = []
    seen: set[str] = set()
    for arch in archs:
        for i, launch in enumerate(_launches):
            key = _key(launch, arch)
            if key not in seen:
                seen.add(key)
                jobs.append((i, arch))
    judge_spills = triton.__version__.startswith(SPILLS_MEASURED_WITH)
    print(f"{len(_launches)} launches, {len(jobs)} distinct kernels x targets to compile (Triton {triton.__version__})")
    if not judge_spills:
        print(f"spills are reported, not judged: the budget was measured with Triton {SPILLS_MEASURED_WITH}x")

    start = time.perf_counter()
    results: list[Result] = []
    ctx = multiprocessing.get_context("fork")  # the workers inherit the recorded launches
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx) as pool:
        futures = [pool.submit(_compile, i, arch) for i, arch in jobs]
        for fut in concurrent.futures.as_completed(futures):
            res = fut.result()
            budget = spill_budget(res.kernel, res.case) if judge_spills else None
            if not res.errors and budget is not None and res.spill > budget:
                res.errors.append(f"spills {res.spill} B per thread (at most {budget} expected)")
            results.append(res)
            if not args.quiet or res.errors:
                status = "FAIL " + "; ".join(res.errors) if res.errors else "ok"
                print(
                    f"sm_{res.arch} {res.kernel:<28} warps={res.warps:<2} regs={res.regs:<3} spill={res.spill:<5} "
                    f"shared={res.shared:<6} {res.seconds:5.1f}s  {res.case}  [{res.config}]  {status}",
                    flush=True,
                )
    failed = [r for r in results if r.errors]
    print(f"{len(results)} compiled in {time.perf_counter() - start:.0f} s; {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
