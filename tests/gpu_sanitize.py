"""Every GPU kernel once, at small odd sizes, for NVIDIA's compute-sanitizer on a lent GPU.

    compute-sanitizer --tool memcheck  --error-exitcode 9 python tests/gpu_sanitize.py
    compute-sanitizer --tool initcheck --error-exitcode 9 python tests/gpu_sanitize.py
    compute-sanitizer --tool racecheck --error-exitcode 9 python tests/gpu_sanitize.py

memcheck finds out-of-bounds and misaligned global accesses (the Triton kernels' masked tiles, the
environment kernels), initcheck reads of device memory nothing wrote (the Triton kernels' scratch
comes from ``torch.empty``), racecheck shared-memory hazards. The tests compare the same kernels
with the CPU backends at many sizes; under the sanitizers (tens of times slower) each kernel runs
once, on shapes that leave partial tiles (odd B, T, N, S, A), and its results are still compared
with the C++ backend so that a kernel that silently did nothing is caught too. Exit status 1 on a
mismatch (the sanitizers' own reports come with their --error-exitcode).

``--device cpu`` is a dry run of the plumbing without a GPU: the Triton kernels run under their
interpreter against the C++ backend, the environments' C++ step against the numpy reference, and
the CUDA-only kernels are skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if "--device" in sys.argv and sys.argv[sys.argv.index("--device") + 1] == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is imported
sys.path.insert(0, str(Path(__file__).resolve().parent))

import metakern
import torch
from conftest import GRAD_TOLERANCES
from metakern import estimators as est
from metakern import policy

_failures: list[str] = []


def _close(what: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """RMS error relative to the RMS of ``want`` (at least 1: outputs near 0, such as objectives
    that cancel, are held to an absolute bound), within the tests' gradient tolerance."""
    tol = GRAD_TOLERANCES[want.dtype]
    a, e = got.detach().to("cpu", torch.float64), want.detach().to(torch.float64)
    if a.shape != e.shape or not torch.isfinite(a).all():
        _failures.append(f"{what}: shape {tuple(a.shape)} (expected {tuple(e.shape)}) or non-finite values")
        return
    rms = lambda x: x.square().mean().sqrt().item() if x.numel() else 0.0  # noqa: E731
    err = rms(a - e) / max(rms(e), 1.0)
    if not err <= tol:
        _failures.append(f"{what}: relative RMS error {err:.2e} (tolerance {tol:.0e})")


def _on(dev: str, backend: str, fn, *cpu_args):
    """fn(*args) with the args on ``dev`` under ``backend``, and on the CPU under the C++ backend."""
    args = [a.to(dev) if isinstance(a, torch.Tensor) else a for a in cpu_args]
    with metakern.use_backend(backend):
        got = fn(*args)
    with metakern.use_backend("cpp"):
        want = fn(*cpu_args)
    return got, want


def _derivs(J: torch.Tensor, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """[J, dJ/dx..., H v...]: value, gradient and an HVP along a fixed random direction v (the
    same on every device; not all-ones, along which a softmax policy's HVP vanishes), through the
    ops' own backward."""
    gs = torch.autograd.grad(J, xs, create_graph=True)
    gen = torch.Generator().manual_seed(1)
    vs = [torch.randn(g.shape, generator=gen, dtype=g.dtype).to(g.device) for g in gs]
    hv = torch.autograd.grad(sum((g * v).sum() for g, v in zip(gs, vs, strict=True)), xs, allow_unused=True)
    return [J, *gs, *(h for h in hv if h is not None)]


def scan(dev: str, gpu_backends: list[str]) -> None:
    for backend in gpu_backends:
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            for time_major in (False, True):
                for reverse in (False, True):
                    shape = (37, 5) if time_major else (5, 37)
                    x, a, c = (
                        torch.randn(shape, dtype=dtype),
                        torch.rand(shape, dtype=dtype),
                        torch.randn(5, dtype=dtype),
                    )

                    def run(x, a, c, reverse=reverse, time_major=time_major):
                        x, a = x.clone().requires_grad_(), a.clone().requires_grad_()
                        y = metakern.linear_scan(x, a, c, reverse=reverse, time_major=time_major)
                        return [y, *torch.autograd.grad(y.float().square().sum(), [x, a])]

                    got, want = _on(dev, backend, run, x, a, c)
                    for i, (g, w) in enumerate(zip(got, want, strict=True)):
                        _close(f"scan {backend} {dtype} time_major={time_major} reverse={reverse} [{i}]", g, w)
        r, v = torch.randn(5, 37), torch.randn(5, 37)
        dones, boot = torch.rand(5, 37) < 0.1, torch.randn(5)
        got, want = _on(dev, backend, lambda r, v, d, b: metakern.gae(r, v, 0.99, 0.95, dones=d, bootstrap=b),
                        r, v, dones, boot)  # fmt: skip
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(f"gae {backend} [{i}]", g, w)


def estimators(dev: str) -> None:
    B, T = 5, 37
    objectives = {
        "maml_surrogate": lambda l, mu, r, v, d: est.maml_surrogate(l, r, 0.9, dones=d),
        "e_maml_term": lambda l, mu, r, v, d: est.e_maml_term(l, r.sum(1), dones=d),
        "dice": lambda l, mu, r, v, d: est.dice(l, r, 0.9, dones=d),
        "dice_baseline": lambda l, mu, r, v, d: est.dice_baseline(l, r, v, 0.9, dones=d),
        "loaded_dice": lambda l, mu, r, v, d: est.loaded_dice(l, r, 0.9, 0.7, dones=d),
        "lvc": lambda l, mu, r, v, d: est.lvc(l, r, 0.9, dones=d),
        "off_policy_dice": lambda l, mu, r, v, d: est.off_policy_dice(l, mu, r, 0.9, dones=d),
        "taypo2": lambda l, mu, r, v, d: est.taypo(l, mu, r, v, 0.9, 2, dones=d),
        "doubly_robust": lambda l, mu, r, v, d: est.doubly_robust(l, mu, r, v, 0.9, rho_max=1.0, c_max=1.0, dones=d),
    }
    for dtype in (torch.float32, torch.float64):
        logp = -torch.rand(B, T, dtype=dtype)
        mu, r, v = (
            logp + 0.3 * torch.randn(B, T, dtype=dtype),
            torch.randn(B, T, dtype=dtype),
            torch.randn(B, T, dtype=dtype),
        )
        dones = torch.rand(B, T) < 0.1
        for name, f in objectives.items():

            def run(logp, mu, r, v, d, f=f):
                logp = logp.clone().requires_grad_()
                return _derivs(f(logp, mu, r, v, d), [logp])

            got, want = _on(dev, "triton", run, logp, mu, r, v, dones)
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                _close(f"estimators {name} {dtype} [{i}]", g, w)


def policies(dev: str) -> None:
    N, B, T, S, A, F = 3, 2, 17, 7, 3, 5
    for dtype in (torch.float32, torch.float64):
        theta = torch.randn(N, S, A, dtype=dtype)
        states, actions = torch.randint(0, S, (N, B, T)), torch.randint(0, A, (N, B, T))

        def tab(theta, s, a):
            theta = theta.clone().requires_grad_()
            return _derivs(
                (
                    policy.tabular_log_prob(theta, s, a)
                    * torch.linspace(-1, 1, T, dtype=theta.dtype, device=theta.device)
                ).sum(),
                [theta],
            )

        got, want = _on(dev, "triton", tab, theta, states, actions)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(f"policy tabular {dtype} [{i}]", g, w)
        w0, x0 = torch.randn(N, F, A, dtype=dtype), torch.randn(N, B, T, F, dtype=dtype)

        def lin(w, x, a):
            w, x = w.clone().requires_grad_(), x.clone().requires_grad_()
            return _derivs(policy.linear_softmax_log_prob(w, x, a).square().sum(), [w, x])

        got, want = _on(dev, "triton", lin, w0, x0, actions)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(f"policy linear {dtype} [{i}]", g, w)


def synapse(dev: str) -> None:
    B, T, S = 3, 9, 2
    for N in (20, 70, 130):  # on chip; backward streamed (N > 64); both streamed (N > 128)
        for dtype in (torch.float32, torch.bfloat16):
            v0 = torch.randn(B, T, N).to(dtype)
            W0, alpha = 0.1 * torch.randn(B, N, N), 0.1 * torch.randn(N, N)
            kappa, beta = torch.randn(S, S + 1), 0.5 * torch.rand(S, S + 1)
            reset = torch.rand(B, T) < 0.2

            def run(v0, W0, alpha, kappa, beta, reset):
                xs = [t.clone().requires_grad_() for t in (v0, W0, alpha, kappa, beta)]
                vS, WT = metakern.metods_synapse(*xs, reset, checkpoint_every=4)
                loss = vS.float().square().sum() + WT.square().sum()
                return [vS, WT, *torch.autograd.grad(loss, xs)]

            got, want = _on(dev, "triton", run, v0, W0, alpha, kappa, beta, reset)
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                _close(f"synapse N={N} {dtype} [{i}]", g, w)
            step = lambda v, W, a, k, b: metakern.metods_step(v, W, a, k, b)  # noqa: E731
            got, want = _on(dev, "triton", step, v0[:, 0].contiguous().float(), W0, alpha, kappa, beta)
            for i, (g, w) in enumerate(zip(got, want, strict=True)):
                _close(f"synapse step N={N} {dtype} [{i}]", g, w)


def environments(dev: str) -> None:
    from env_testing import run_lockstep
    from metakern.envs import GridNavi, Harlow, KrazyWorld, Maze, TabularMDP
    from metakern.envs.ipd import IPD

    families = [
        (KrazyWorld, {"num_tasks": 5}), (KrazyWorld, {"num_tasks": 5, "obs_view": "full", "obs_mode": "image"}),
        (Maze, {"num_mazes": 4}), (GridNavi, {}), (TabularMDP, {"num_tasks": 6}), (IPD, {}), (Harlow, {}),
    ]  # fmt: skip
    for make, kw in families:
        for mode in ("next_step", "same_step", "disabled"):
            ref = make(37, backend="cpp" if dev != "cpu" else "reference", autoreset_mode=mode, max_steps=9, **kw)
            env = make(
                37, device=dev, backend="cuda" if dev != "cpu" else "cpp", autoreset_mode=mode, max_steps=9, **kw
            )
            ref.reset()
            env.reset()
            try:
                run_lockstep(ref, env, steps=25, seed=1)
            except AssertionError as e:
                _failures.append(f"env {make.__name__} {kw} {mode}: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--only", help="comma-separated: scan, estimators, policy, synapse, envs")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device (use --device cpu for a dry run)", file=sys.stderr)
        return 2
    parts = {
        "scan": lambda: scan(args.device, ["cuda", "triton"] if args.device == "cuda" else ["triton"]),
        "estimators": lambda: estimators(args.device),
        "policy": lambda: policies(args.device),
        "synapse": lambda: synapse(args.device),
        "envs": lambda: environments(args.device),
    }
    only = args.only.split(",") if args.only else list(parts)
    _failures.clear()
    torch.manual_seed(0)
    for name in only:
        t0 = time.perf_counter()
        parts[name]()
        if args.device == "cuda":
            torch.cuda.synchronize()
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    for f in _failures:
        print("MISMATCH", f)
    print(f"{len(_failures)} mismatches")
    return 1 if _failures else 0


if __name__ == "__main__":
    sys.exit(main())
