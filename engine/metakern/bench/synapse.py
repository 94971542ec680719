"""Benchmark cases of the MetODS dynamic-synapse op (``metakern.ops.synapse``, issue 5).

Family ``synapse`` (part of every ``metakern bench`` run):

* ``metods_synapse.fwd+bwd`` at B=64, T=200, N=64, S=2 (issue 5's CPU target): the op, then a
  scalar loss ``<vS, cv> + <WT, cW>`` (fixed random cotangents) differentiated w.r.t. v0, W0 [N, N],
  alpha, kappa and beta. Baseline: ``naive-autograd``, the naive Algorithm-1 loop
  (``metods_synapse_reference``) differentiated by autograd, which is what the speed-up is
  against. On CUDA the same case also runs at B=256, T=500 (the GPU target).
* ``metods_synapse.fwd``, same size, nothing requires grad (the op saves nothing); peer
  ``naive-loop``, the naive loop without autograd.
* ``metods_step.fwd`` at B=64, N=64, S=2: one acting step (``metods_step``, W [B, N, N] carried
  by the caller), no grad; peer ``naive-loop``, the naive loop over one step.

Rows: the metakern backends of the device (``cpp`` on CPU, ``triton`` on CUDA) and ``reference``
(the closed form in batched torch; its backward keeps every step's W_in, B*T*N*N values).

Family ``synapse-scaling`` (opt-in; not in the default run): ``metods_synapse.fwd+bwd`` over
N in {16, 32, 64, 128, 256} x S in {1, 2, 4} x T in {200, 1000, 5000} at B=16 (``SCALING_B``: at
B=16 the naive loop fits in memory at more sizes, and the largest fused size, N=256, S=4, T=5000,
is 0.7 TFLOP per call, about 15 s on 2 cores at 50 GFLOP/s); rows: the compiled backend and
``naive-autograd``. Run it with ``python -m metakern.bench.synapse --scaling`` (``SCALING_SETTINGS``:
one timed call per big size; then the markdown table of ``scaling_table``), or through
``metakern bench --only synapse-scaling`` (an opt-in family: ``harness.OPT_IN``).

Autograd saves 3S N x N matrices per step and sequence of the naive loop (W^(s), v v^T and
alpha * v v^T of every inner step; counted with ``saved_tensors_hooks``), B*T*3S*N*N values in all
(``naive_memory_bytes``; measured peaks on CPU ran up to about twice that). Where that exceeds
``naive_limit_bytes`` (4 GiB on CPU, half the GPU's memory on CUDA; ``METAKERN_BENCH_NAIVE_LIMIT_GB``
overrides) the ``naive-autograd`` row is skipped with the reason (``Impl.unavailable``: the run's
notes and the scaling table say so).

FLOP model (``flops``): the per-pass multiply-add counts that ``cpp/synapse/metods.h`` states for
the algorithm (a model, not a count of executed instructions; 2 FLOP per multiply-add), per step
and sequence and per N x N element, the O(S^2 N) vector work left out (under 1/N of it):

* forward: S read passes (``gamma W_in v_{s-1}`` plus the alpha terms: s in pass s) and one write
  pass (S + 1): ``F(S) = S (S + 1) / 2 + S + 1`` (S=2: 6);
* backward: R recompute passes of the write (S + 1 each; R = 1 when the checkpoint interval C is at
  most 64 steps, as the op's default ``ceil(N / (2 S))`` is for N <= 128 S; R = 2 for longer
  segments), the write's adjoint (2 S + 3), S - 1 inner passes (2 s - 1 in pass s: S^2 - 1 in all)
  and a final pass (3 S + S (S - 1) / 2 + 3): ``G(S) = (3 S^2 + 9 S + 10) / 2 + R (S + 1)``
  (S=2, R=1: 23, about 3.8x the forward).

So ``flops = 2 * (F(S) [+ G(S)]) * B * T * N^2``: 58 N^2 FLOP per step and sequence at S=2 for
forward + backward. ``python -m metakern.bench.synapse`` reports the compiled backends' achieved
FLOP/s against the device's measured peak (an n x n matmul in the case's dtype; TF32 stays off on
CUDA unless the user turned it on, so it is the plain fp32 rate the kernels can use).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torch

from ..ops.synapse import default_checkpoint_every, memory_model_bytes, metods_step, metods_synapse
from ..ops.synapse_reference import metods_synapse_reference
from . import harness, report
from .harness import Case, Impl, Settings, backends_for, register

FAMILY = "synapse"
SCALING_FAMILY = "synapse-scaling"
FWD_BWD = "metods_synapse.fwd+bwd"
FWD = "metods_synapse.fwd"
STEP = "metods_step.fwd"
NAIVE_GRAD = "naive-autograd"
NAIVE = "naive-loop"
COMPILED = ("cpp", "triton")  # the fused kernels (the FLOP model describes these)

TARGET: tuple[int, int, int, int] = (64, 200, 64, 2)  # B, T, N, S: issue 5's CPU target
GPU_TARGET: tuple[int, int, int, int] = (256, 500, 64, 2)  # and its GPU target
STEP_SIZE: tuple[int, int, int] = (64, 64, 2)  # B, N, S of the acting step
SCALING_B = 16
SCALING_N: tuple[int, ...] = (16, 32, 64, 128, 256)
SCALING_S: tuple[int, ...] = (1, 2, 4)
SCALING_T: tuple[int, ...] = (200, 1000, 5000)
NAIVE_LIMIT_ENV = "METAKERN_BENCH_NAIVE_LIMIT_GB"
CPU_NAIVE_LIMIT_BYTES = 4 << 30

# The scaling sweep's timing: one warm-up call, then samples of at least 50 ms until 1 s is spent
# (at most 5): a call of seconds is timed once, a call of milliseconds in loops.
SCALING_SETTINGS = Settings(
    min_sample_s=0.05, max_repeats=5, min_repeats=1, budget_s=1.0, warmup_s=0.0, warmup_calls=1, quick=False
)


def shape_str(B: int, T: int | None, N: int, S: int) -> str:
    return f"B={B},N={N},S={S}" if T is None else f"B={B},T={T},N={N},S={S}"


def parse_shape(shape: str) -> dict[str, int]:
    """``"B=64,T=200,N=64,S=2"`` -> ``{"B": 64, "T": 200, "N": 64, "S": 2}``."""
    return {k: int(v) for k, v in re.findall(r"([A-Za-z]+)=(\d+)", shape)}


# Issue 5's bars per (device, shape): (speed-up over the naive loop at least, fraction of its peak
# memory at most).
TARGETS: dict[tuple[str, str], tuple[float, float | None]] = {
    ("cpu", shape_str(*TARGET)): (10.0, 1 / 20),
    ("cuda", shape_str(*GPU_TARGET)): (30.0, None),
}


# --------------------------------------------------------------------------------------------------
# Models: FLOPs, bytes, the naive loop's memory


def forward_madds(S: int) -> int:
    """Multiply-adds per N x N element per step and sequence of the fused forward (module docstring)."""
    return S * (S + 1) // 2 + S + 1


def recompute_passes(N: int, S: int, T: int, C: int | None = None) -> int:
    """Recompute passes per step in the backward: 1 for segments of up to 64 steps, else 2 (nested
    sqrt split); C defaults to the op's ``default_checkpoint_every``."""
    C = default_checkpoint_every(N, S, T) if C is None else min(C, T)
    return 1 if C <= 64 else 2


def backward_madds(S: int, recomputes: int = 1) -> int:
    """The same for the checkpointed backward, its ``recomputes`` passes rebuilding W_in included."""
    return (3 * S * S + 9 * S + 10) // 2 + recomputes * (S + 1)


def flops(B: int, T: int, N: int, S: int, backward: bool, C: int | None = None) -> int:
    """FLOP model of one call of the fused op (forward, or forward + backward at checkpoint interval C,
    by default the op's)."""
    madds = forward_madds(S) + (backward_madds(S, recompute_passes(N, S, T, C)) if backward else 0)
    return 2 * madds * B * T * N * N


def bytes_floor(B: int, T: int, N: int, backward: bool) -> int:
    """Elements any implementation reads + writes once: forward v0, W0 [N, N], alpha -> vS, WT;
    backward gvS, gWT, v0, W0, alpha -> dv0, dW0, dalpha."""
    fwd = 2 * B * T * N + B * N * N + 2 * N * N
    return fwd + (3 * B * T * N + B * N * N + 4 * N * N if backward else 0)


def naive_memory_bytes(B: int, T: int, N: int, S: int, itemsize: int = 4) -> int:
    """What autograd saves for the naive loop's backward: W^(s), v v^T and alpha * v v^T for every
    inner step of every step, B*T*3S*N*N values (vectors and the outputs not counted)."""
    return B * T * 3 * S * N * N * itemsize


def naive_limit_bytes(device: torch.device | str) -> int:
    """Above this estimated memory the naive loop is not run: ``METAKERN_BENCH_NAIVE_LIMIT_GB``
    (GiB) if set, else 4 GiB on CPU and half the device's memory on CUDA."""
    env = os.environ.get(NAIVE_LIMIT_ENV, "").strip()
    if env:
        return int(float(env) * (1 << 30))
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    return CPU_NAIVE_LIMIT_BYTES


def naive_skip_reason(B: int, T: int, N: int, S: int, itemsize: int, limit: int) -> str | None:
    """None if the naive loop's estimated memory fits under ``limit`` bytes, else why it is skipped."""
    need = naive_memory_bytes(B, T, N, S, itemsize)
    if need <= limit:
        return None
    return (
        f"autograd would save {report.fmt_bytes(need)} for the naive loop at {shape_str(B, T, N, S)} "
        f"(B*T*3S*N*N values) > {report.fmt_bytes(limit)} (set {NAIVE_LIMIT_ENV} to change)"
    )


def model_bytes(B: int, T: int, N: int, S: int, itemsize: int, device: str, threads: int | None = None) -> int:
    """``metakern.ops.synapse.memory_model_bytes`` at the op's default checkpoint interval: saved
    vectors + checkpoints + the backward's scratch, per worker: ``threads`` on CPU (the op runs
    ``torch.get_num_threads()`` workers; the default), one per sequence on CUDA."""
    workers = B if device == "cuda" else (threads or torch.get_num_threads())
    return memory_model_bytes(B, T, N, S, None, itemsize, workers)


# --------------------------------------------------------------------------------------------------
# Inputs

LEAVES = ("v0", "W0", "alpha", "kappa", "beta")  # what the fwd+bwd cases differentiate with respect to


def make_inputs(
    B: int, T: int, N: int, S: int, device: torch.device | str, dtype: torch.dtype, grad: bool
) -> dict[str, Any]:
    """Seeded inputs in a stable regime: the beta rows sum to 0.9 + a write of 0.1, so W decays
    (gamma_S <= 0.9) and stays bounded over any T; kappa mixes the earlier vectors at 0.5 / s."""
    g = torch.Generator().manual_seed(0)
    cd = torch.float64 if dtype == torch.float64 else torch.float32
    kappa = torch.zeros(S, S + 1, dtype=cd)
    beta = torch.zeros(S, S + 1, dtype=cd)
    for s in range(1, S + 1):
        kappa[s - 1, :s] = 0.5 / s
        kappa[s - 1, s] = 1.0
        beta[s - 1, :s] = 0.9 / s
        beta[s - 1, s] = 0.1
    out = {
        "v0": torch.randn(B, T, N, generator=g, dtype=cd),
        "W0": torch.randn(N, N, generator=g, dtype=cd) / math.sqrt(N),
        "alpha": 0.1 * torch.rand(N, N, generator=g, dtype=cd),
        "kappa": kappa,
        "beta": beta,
    }
    if grad:
        out["cot_v"] = torch.randn(B, T, N, generator=g, dtype=cd)
        out["cot_W"] = torch.randn(B, N, N, generator=g, dtype=cd)
    out = {k: v.to(device) for k, v in out.items()}
    if grad:
        for k in LEAVES:
            out[k].requires_grad_()
    return out


def make_step_inputs(B: int, N: int, S: int, device: torch.device | str, dtype: torch.dtype) -> dict[str, Any]:
    """One acting step: v [B, N], a carried state W [B, N, N] (W0 plus a per-sequence trace)."""
    inp = make_inputs(B, 1, N, S, device, dtype, grad=False)
    g = torch.Generator().manual_seed(1)
    trace = 0.1 * torch.randn(B, N, N, generator=g, dtype=inp["W0"].dtype).to(device)
    return {
        "v": inp["v0"][:, 0].contiguous(),
        "W": inp["W0"] + trace,
        "alpha": inp["alpha"],
        "kappa": inp["kappa"],
        "beta": inp["beta"],
    }


# --------------------------------------------------------------------------------------------------
# Implementations


def naive_step(v, W, alpha, kappa, beta):
    """The naive loop over one step: (v_S [B, N], W_next [B, N, N])."""
    vS, WT = metods_synapse_reference(v.unsqueeze(1), W, alpha, kappa, beta)
    return vS.squeeze(1), WT


def _fwd_bwd(op: Callable) -> Callable[[dict[str, Any]], Callable[[], Any]]:
    def setup(inp):
        leaves = tuple(inp[k] for k in LEAVES)
        cot_v, cot_W = inp["cot_v"], inp["cot_W"]

        def step():
            vS, WT = op(*leaves)
            loss = (vS * cot_v).sum() + (WT * cot_W).sum()
            return torch.autograd.grad(loss, leaves)

        return step

    return setup


def _fwd(op: Callable) -> Callable[[dict[str, Any]], Callable[[], Any]]:
    def setup(inp):
        args = tuple(inp[k] for k in LEAVES)

        def step():
            with torch.no_grad():
                return op(*args)

        return step

    return setup


def _step(op: Callable) -> Callable[[dict[str, Any]], Callable[[], Any]]:
    def setup(inp):
        args = (inp["v"], inp["W"], inp["alpha"], inp["kappa"], inp["beta"])

        def step():
            with torch.no_grad():
                return op(*args)

        return step

    return setup


def metakern_backends(device: torch.device, compiled_only: bool = False) -> list[str]:
    """The metakern backends with a synapse kernel on ``device`` (the CUDA module has none)."""
    names = [b for b in backends_for(device) if b != "cuda"]
    return [b for b in names if b in COMPILED] if compiled_only else names


def naive_impl(B: int, T: int, N: int, S: int, device: torch.device, dtype: torch.dtype) -> Impl:
    """``naive-autograd`` for fwd+bwd, skipped where its estimated memory exceeds the limit."""
    itemsize = torch.empty((), dtype=dtype).element_size()

    def unavailable() -> str | None:
        return naive_skip_reason(B, T, N, S, itemsize, naive_limit_bytes(device))

    return Impl(NAIVE_GRAD, _fwd_bwd(metods_synapse_reference), kind="peer", unavailable=unavailable)


def _case(
    family: str,
    name: str,
    size: tuple[int, int | None, int, int],
    device: torch.device,
    dtype: torch.dtype,
    make: Callable[[], dict[str, Any]],
    impls: list[Impl],
    baseline: str,
    note: str,
) -> Case:
    """A case at size (B, T, N, S); T None is one acting step. Backward iff the name says fwd+bwd."""
    B, T, N, S = size
    backward = name.endswith("+bwd")
    es = torch.empty((), dtype=dtype).element_size()
    # The step reads v, W [B, N, N], alpha and writes v_S, W_next.
    floor = (2 * B * N + 2 * B * N * N + N * N) if T is None else bytes_floor(B, T, N, backward)
    case = Case(
        family=family,
        name=name,
        shape=shape_str(B, T, N, S),
        device=device,
        dtype=dtype,
        items=B * (T or 1),  # sequence-steps: items/s is steps/s
        bytes_moved=floor * es,
        make_inputs=make,
        impls=impls,
        note=note,
        baseline=baseline,
    )
    # FLOPs per call, for a harness that records them (a Case.flops field) and for ``annotate``.
    case.flops = flops(B, T or 1, N, S, backward)
    return case


def synapse_cases(
    device: torch.device | str,
    dtype: torch.dtype,
    target: tuple[int, int, int, int] | None = TARGET,
    step: tuple[int, int, int] | None = STEP_SIZE,
    gpu_target: tuple[int, int, int, int] | None = GPU_TARGET,
) -> list[Case]:
    """The ``synapse`` family's cases; the sizes are parameters so tests can shrink them."""
    device = torch.device(device)
    backends = metakern_backends(device)
    cases: list[Case] = []
    sizes = [target] if target is not None else []
    if device.type == "cuda" and gpu_target is not None and gpu_target != target:
        sizes.append(gpu_target)
    for B, T, N, S in sizes:
        impls = [Impl(b, _fwd_bwd(metods_synapse), backend=b) for b in backends]
        impls.append(naive_impl(B, T, N, S, device, dtype))
        make = partial(make_inputs, B, T, N, S, device, dtype, True)
        note = "forward + backward to v0, W0, alpha, kappa, beta"
        cases.append(_case(FAMILY, FWD_BWD, (B, T, N, S), device, dtype, make, impls, NAIVE_GRAD, note))
    if target is not None:
        B, T, N, S = target
        impls = [Impl(b, _fwd(metods_synapse), backend=b) for b in backends]
        impls.append(Impl(NAIVE, _fwd(metods_synapse_reference), kind="peer"))
        make = partial(make_inputs, B, T, N, S, device, dtype, False)
        cases.append(_case(FAMILY, FWD, (B, T, N, S), device, dtype, make, impls, NAIVE, "forward only, no grad"))
    if step is not None:
        B, N, S = step
        impls = [Impl(b, _step(metods_step), backend=b) for b in backends]
        impls.append(Impl(NAIVE, _step(naive_step), kind="peer"))
        make = partial(make_step_inputs, B, N, S, device, dtype)
        note = "one acting step (metods_step), no grad"
        cases.append(_case(FAMILY, STEP, (B, None, N, S), device, dtype, make, impls, NAIVE, note))
    return cases


def scaling_cases(
    device: torch.device | str,
    dtype: torch.dtype,
    B: int = SCALING_B,
    Ns: Sequence[int] = SCALING_N,
    Ss: Sequence[int] = SCALING_S,
    Ts: Sequence[int] = SCALING_T,
) -> list[Case]:
    """``metods_synapse.fwd+bwd`` over the N x S x T grid: the compiled backend and the naive loop
    (skipped where it would not fit)."""
    device = torch.device(device)
    cases = []
    for N in Ns:
        for S in Ss:
            for T in Ts:
                impls = [Impl(b, _fwd_bwd(metods_synapse), backend=b) for b in metakern_backends(device, True)]
                impls.append(naive_impl(B, T, N, S, device, dtype))
                make = partial(make_inputs, B, T, N, S, device, dtype, True)
                size = (B, T, N, S)
                cases.append(_case(SCALING_FAMILY, FWD_BWD, size, device, dtype, make, impls, NAIVE_GRAD, "scaling"))
    return cases


@register(FAMILY)
def _cases(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    return synapse_cases(device, dtype)


@register(SCALING_FAMILY)
def _scaling(device: torch.device, dtype: torch.dtype) -> Iterable[Case]:
    return scaling_cases(device, dtype)  # listed only when selected (harness.OPT_IN)


# --------------------------------------------------------------------------------------------------
# Records: FLOP/s, the scaling table, the targets


def record_flops(record: dict[str, Any]) -> int | None:
    """The FLOP model of a synapse record's call (None for other families)."""
    if record.get("family") not in (FAMILY, SCALING_FAMILY):
        return None
    d = parse_shape(record["shape"])
    if not {"B", "N", "S"} <= d.keys():
        return None
    return flops(d["B"], d.get("T", 1), d["N"], d["S"], record["case"].endswith("+bwd"))


def annotate(records: Iterable[dict[str, Any]], peak_flops: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Adds ``flops``, ``flops_per_s`` and, given the device's measured peak (``{device: FLOP/s}``),
    ``flop_fraction`` to the compiled backends' synapse records (in place; returns them)."""
    out = list(records)
    for r in out:
        n = record_flops(r)
        if n is None or r.get("backend") not in COMPILED:
            continue
        r["flops"] = n
        r["flops_per_s"] = n / r["median_s"]
        peak = (peak_flops or {}).get(r["device"])
        if peak:
            r["flop_fraction"] = r["flops_per_s"] / peak
    return out


def measured_peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32, n: int | None = None) -> float:
    """FLOP/s of an n x n matmul on ``device`` (n = 8192 on CUDA, 1024 on CPU), the device's measured
    peak for ``flop_fraction``. TF32 is whatever torch says (off by default): the plain fp32 rate."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=dtype).to(device)
    b = torch.randn(n, n, generator=g, dtype=dtype).to(device)
    out = torch.empty_like(a)
    timing = harness.time_callable(lambda: torch.mm(a, b, out=out), device, harness.QUICK)
    return 2 * n**3 / timing.median_s


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _table_limit(device: str) -> int | None:
    """The naive loop's memory limit on ``device`` if it can be known here (CUDA needs the device)."""
    if device == "cuda" and not torch.cuda.is_available() and not os.environ.get(NAIVE_LIMIT_ENV, "").strip():
        return None
    return naive_limit_bytes(device)


def scaling_table(records: Sequence[dict[str, Any]], naive_limit: int | None = None) -> str:
    """Markdown table(s) of a scaling sweep, one per device, dtype, B and compiled backend: N, S, T,
    the fused op's time, GFLOP/s (``flops`` model), peak MB and the memory model's MB
    (``memory_model_bytes``: saved vectors + checkpoints + the backward's scratch), then the naive
    loop's time, peak MB and the speed-up where it ran, or why not (the skip rule at
    ``naive_limit`` bytes, by default ``naive_limit_bytes(device)``). MB = 1e6 bytes."""
    rows: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("family") != SCALING_FAMILY:
            continue
        d = parse_shape(r["shape"])
        rows.setdefault((r["device"], r["dtype"], d["B"], d["N"], d["S"], d["T"]), {})[r["backend"]] = r
    groups: dict[tuple, list[tuple]] = {}
    for key, by_backend in rows.items():
        fused = next((b for b in COMPILED if b in by_backend), "")
        groups.setdefault((*key[:3], fused), []).append(key)
    out = []
    for (device, dtype, B, fused), keys in sorted(groups.items()):
        itemsize = torch.empty((), dtype=getattr(torch, dtype)).element_size()
        limit = naive_limit if naive_limit is not None else _table_limit(device)
        meta = next(iter(rows[keys[0]].values())).get("meta") or {}
        threads = meta.get("torch_threads") or torch.get_num_threads()
        where = f"{device}, {fused or 'no fused backend'}" + (f", {threads} threads" if device == "cpu" else "")
        out += [
            f"metods_synapse forward + backward, B={B}, {dtype} ({where}); MB = 1e6 bytes; model = saved "
            "vectors + checkpoints + backward scratch (memory_model_bytes)",
            "",
            "| N | S | T | fused time | GFLOP/s | peak MB | model MB | naive time | naive peak MB | speed-up |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key in sorted(keys):
            N, S, T = key[3:]
            fast = rows[key].get(fused)
            naive = rows[key].get(NAIVE_GRAD)
            cells = [str(N), str(S), str(T)]
            if fast is not None:
                rate = flops(B, T, N, S, True) / fast["median_s"] / 1e9
                cells += [report.fmt_time(fast["median_s"]), f"{rate:.1f}", _mb(fast.get("peak_mem_bytes"))]
            else:
                cells += ["-", "-", "-"]
            cells.append(_mb(model_bytes(B, T, N, S, itemsize, device, threads)))
            if naive is not None:
                speedup = naive["median_s"] / fast["median_s"] if fast is not None else None
                cells += [report.fmt_time(naive["median_s"]), _mb(naive.get("peak_mem_bytes"))]
                cells.append(report.fmt_ratio(speedup))
            else:
                need = naive_memory_bytes(B, T, N, S, itemsize)
                if limit is not None and need > limit:
                    why = f"skipped: saves ~{need / 1e9:.1f} GB > {limit / 1e9:.1f} GB"
                else:
                    why = f"not run (saves ~{need / 1e9:.1f} GB)"
                cells += [why, "-", "-"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n" if out else ""


def target_summary(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per fwd+bwd synapse case and metakern backend: speed-up and peak-memory fraction of
    the naive loop, achieved FLOP/s (and fraction of the measured peak where annotated), and
    whether issue 5's bars (``TARGETS``) are met."""
    by_case: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("family") == FAMILY and r.get("case") == FWD_BWD:
            by_case.setdefault((r["device"], r["dtype"], r["shape"]), {})[r["backend"]] = r
    lines = []
    for (device, dtype, shape), rows in by_case.items():
        naive = rows.get(NAIVE_GRAD)
        bar = TARGETS.get((device, shape))
        for name, r in rows.items():
            if r.get("kind") != "backend":
                continue
            parts = [f"{FAMILY}/{FWD_BWD}/{shape} [{device}, {dtype}] {name}: {report.fmt_time(r['median_s'])}"]
            if naive is not None:
                speedup = naive["median_s"] / r["median_s"]
                text = f"{report.fmt_ratio(speedup)} faster than {NAIVE_GRAD} ({report.fmt_time(naive['median_s'])})"
                if bar is not None and name in COMPILED:
                    text += f" [target >= {bar[0]:g}x: {'met' if speedup >= bar[0] else 'NOT met'}]"
                parts.append(text)
                ours, theirs = r.get("peak_mem_bytes"), naive.get("peak_mem_bytes")
                if ours is not None and theirs:
                    frac = ours / theirs
                    text = f"peak {report.fmt_bytes(ours)} vs {report.fmt_bytes(theirs)} = 1/{1 / max(frac, 1e-9):.0f}"
                    if bar is not None and bar[1] is not None and name in COMPILED:
                        text += f" [target <= 1/{1 / bar[1]:.0f}: {'met' if frac <= bar[1] else 'NOT met'}]"
                    parts.append(text)
            else:
                parts.append(f"{NAIVE_GRAD} not run")
            if r.get("flops_per_s"):
                text = f"{r['flops_per_s'] / 1e9:.1f} GFLOP/s (model)"
                if r.get("flop_fraction") is not None:
                    text += f" = {r['flop_fraction']:.1%} of the measured matmul peak"
                parts.append(text)
            lines.append("; ".join(parts))
    return lines


# --------------------------------------------------------------------------------------------------
# python -m metakern.bench.synapse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m metakern.bench.synapse",
        description=(
            "Issue 5's synapse benchmarks: the target cases (family 'synapse') with speed-up, memory and "
            "FLOP/s against the targets, or with --scaling the N x S x T sweep and its markdown table. "
            "--records formats an earlier --json run (of this or of 'metakern bench') instead of running."
        ),
    )
    p.add_argument("--scaling", action="store_true", help="run the scaling sweep (family synapse-scaling)")
    p.add_argument("--batch", type=int, default=SCALING_B, help=f"--scaling: B (default {SCALING_B})")
    p.add_argument("--naive-limit-gb", type=float, help=f"skip the naive loop above this estimate ({NAIVE_LIMIT_ENV})")
    p.add_argument("--device", action="append", choices=("cpu", "cuda"), help="default: cpu, plus cuda if available")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--quick", action="store_true", help="target cases: the harness's quick settings")
    p.add_argument("--only", action="append", metavar="PATTERN", help="rows to run, as in metakern bench")
    p.add_argument("--no-peak", action="store_true", help="do not measure the device's matmul peak")
    p.add_argument("--json", metavar="PATH", help="write the records")
    p.add_argument("--markdown", metavar="PATH", help="--scaling: write the markdown table here too")
    p.add_argument("--records", metavar="RUN.json", help="format these records instead of running")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.naive_limit_gb is not None:
        os.environ[NAIVE_LIMIT_ENV] = str(args.naive_limit_gb)
    if args.records:
        records = annotate(report.read_json(args.records))
    else:
        from .cli import run_meta

        names = list(dict.fromkeys(args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])))
        if "cuda" in names and not torch.cuda.is_available():
            print("--device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
            return 2
        dtype = getattr(torch, args.dtype)
        settings = SCALING_SETTINGS if args.scaling else (harness.QUICK if args.quick else harness.FULL)
        runner = harness.Runner(
            settings=settings,
            select=args.only,
            meta=run_meta(args),
            log=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
        )
        start = time.perf_counter()
        records = []
        for name in names:
            device = torch.device(name)
            cases = scaling_cases(device, dtype, B=args.batch) if args.scaling else synapse_cases(device, dtype)
            records += runner.run(cases)
        elapsed = time.perf_counter() - start
        peaks = {} if args.no_peak or not records else {n: measured_peak_flops(n, dtype) for n in names}
        annotate(records, peaks)
        print(report.format_table(records))
        for note in runner.notes:
            print(f"note: {note}")
        for name, peak in peaks.items():
            print(f"measured {args.dtype} matmul peak on {name}: {peak / 1e9:.1f} GFLOP/s")
        print(f"{len(records)} measurements in {elapsed:.1f} s")
        if args.json:
            report.write_json(args.json, records)
            print(f"wrote {args.json}")
    if not records:
        print("no records (nothing matched --only?)", file=sys.stderr)
        return 2
    table = scaling_table(records)
    if table:
        print()
        print(table, end="")
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(table)
            print(f"wrote {args.markdown}")
    summary = target_summary(records)
    if summary:
        print()
        print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
