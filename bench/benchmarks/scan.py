"""asv benchmarks of the scan family, built from the cases in ``metakern.bench.scan``.

Parameters: shape (B, T), the op or mode, the device and the implementation: a metakern backend
(``reference``, ``cpp``, ``cuda``, ``triton``, and ``<backend>-time-major`` on [T, B] inputs) or
``peer`` (the case's loop written as RL code does it today). ``setup`` raises
NotImplementedError, which asv reports as skipped, where an
implementation cannot run (no GPU, module not built, a backend for another device).

``time_*`` synchronize the device after each call; ``peakmem_*`` is asv's process peak RSS;
``track_*`` record, per implementation, the speed-up over the reference and the fraction of the
memory floor (a device copy of the case's bytes / the op's time), both medians from one
``metakern.bench`` quick measurement.
"""

import torch
from metakern.bench import harness
from metakern.bench import scan as cases

# Nothing here may initialise CUDA at import time: asv forks the benchmark processes from a server
# that imported this module (launch_method "forkserver" in asv.conf.json).
SHAPES = [tuple(s) for s in cases.SHAPES]  # ((4096, 256), (64, 4096))
DEVICES = ["cpu", "cuda"]
IMPLS = ["reference", "cpp", "cuda", "triton", "cpp-time-major", "cuda-time-major", "triton-time-major", "peer"]


def _case(op, shape, device):
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    want = cases.shape_str(*shape)
    for case in cases.scan_cases(device, torch.float32, shapes=[shape], tiny=None):
        if case.name == op and case.shape == want:
            return case
    raise NotImplementedError(f"no case {op} at {want}")


def _impl(case, impl):
    if impl == "peer":
        found = [i for i in case.impls if i.kind == "peer"]
    else:
        found = [i for i in case.impls if i.name == impl]
    if not found:
        raise NotImplementedError(f"{case.id} has no {impl} implementation on {case.device.type}")
    reason = harness.impl_unavailable(found[0], case.device)
    if reason is not None:
        raise NotImplementedError(reason)
    return found[0]


class _Bench:
    timeout = 300

    def _setup(self, op, shape, device, impl):
        def build():
            case = _case(op, shape, device)
            return harness.warmed_up(_impl(case, impl), case)

        self.fn, self.sync = harness.keep_latest((op, shape, device, impl), build)


class LinearScan(_Bench):
    """metakern.linear_scan forward, and forward + backward of y.sum() w.r.t. x and a."""

    params = (SHAPES, ["fwd", "fwd+bwd"], DEVICES, IMPLS)
    param_names = ("shape", "mode", "device", "impl")

    def setup(self, shape, mode, device, impl):
        self._setup(f"linear_scan.{mode}", shape, device, impl)

    def time_linear_scan(self, shape, mode, device, impl):
        self.fn()
        self.sync()

    def peakmem_linear_scan(self, shape, mode, device, impl):
        self.fn()


class Returns(_Bench):
    """discounted_returns, gae and vtrace forward, with episode ends (dones)."""

    params = (SHAPES, ["discounted_returns", "gae", "vtrace"], DEVICES, IMPLS)
    param_names = ("shape", "op", "device", "impl")

    def setup(self, shape, op, device, impl):
        self._setup(f"{op}.fwd", shape, device, impl)

    def time_returns(self, shape, op, device, impl):
        self.fn()
        self.sync()

    def peakmem_returns(self, shape, op, device, impl):
        self.fn()


class Ratios:
    """Speed-up over the reference and fraction of the memory floor,
    measured in one process, the two timed in alternating rounds (`harness.Runner(interleave=True)`)."""

    params = (SHAPES, ["linear_scan.fwd", "linear_scan.fwd+bwd", "gae.fwd"], DEVICES, ["cpp", "cuda", "triton", "peer"])
    param_names = ("shape", "case", "device", "impl")
    timeout = 300
    unit = "ratio"

    def setup(self, shape, case, device, impl):
        def build():
            c = _case(case, shape, device)
            name = _impl(c, impl).name
            c.impls = [i for i in c.impls if i.name in (c.baseline, name)]
            runner = harness.Runner(settings=harness.QUICK, measure_memory=False, interleave=True)
            return {r["backend"]: r for r in runner.measure_case(c)}[name]

        self.row = harness.keep_latest(("ratios", shape, case, device, impl), build)

    def track_speedup_vs_reference(self, shape, case, device, impl):
        return self.row["speedup"]

    def track_floor_fraction(self, shape, case, device, impl):
        return self.row["floor_fraction"]
