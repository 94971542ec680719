"""asv benchmarks of the meta-gradient families (``estimators``, ``oracle``, ``policy``), built from
the cases in ``metakern.bench`` (float64, as those families run).

Parameters: the case (``family/name/shape``), the device and the implementation, by its name in
the case (a metakern backend, or a peer such as ``autograd`` or ``torch.func-unrolled``). ``setup``
raises NotImplementedError, which asv reports as skipped, where the combination does not exist or
cannot run here. ``time_*`` synchronize the device after each call; ``peakmem_*`` is asv's process
peak RSS; ``track_speedup`` is the speed-up over the case's baseline from one quick measurement.
"""

import functools

import torch
from metakern.bench import harness

# Nothing here may initialise CUDA at import time (asv forks benchmark processes from a server that
# imported this module); the case list comes from the CPU cases, which the CUDA ones mirror.
FAMILIES = ("estimators", "oracle", "policy")
DEVICES = ["cpu", "cuda"]


def _cases(device):
    factories = harness.families()
    out = []
    for family in FAMILIES:
        if family in factories:
            out.extend(factories[family](torch.device(device), torch.float64))
    return out


_CPU_CASES = _cases("cpu")
CASES = [c.id for c in _CPU_CASES]
IMPLS = sorted({i.name for c in _CPU_CASES for i in c.impls} | {"triton", "cuda"})


def _find(case_id, device, impl):
    return harness.find_on_device(_CPU_CASES, _cases, case_id, device, impl)


class MetaGradient:
    """Estimator derivatives, exact oracle meta-gradients, policy-op HVPs."""

    params = (CASES, DEVICES, IMPLS)
    param_names = ("case", "device", "impl")
    timeout = 300

    def setup(self, case_id, device, impl):
        find = functools.partial(_find, case_id, device, impl)
        _, self.fn, self.sync = harness.kept_warm((case_id, device, impl), find)

    def time_call(self, case_id, device, impl):
        self.fn()
        self.sync()

    def peakmem_call(self, case_id, device, impl):
        self.fn()


class MetaGradientSpeedup:
    """Speed-up over the case's baseline (autograd, torch.func),
    measured in one process, the two timed in alternating rounds (`harness.Runner(interleave=True)`)."""

    params = (CASES, DEVICES, IMPLS)
    param_names = ("case", "device", "impl")
    timeout = 300
    unit = "ratio"

    def setup(self, case_id, device, impl):
        def build():
            case, found = _find(case_id, device, impl)
            case.impls = [i for i in case.impls if i.name in (case.baseline, found.name)]
            runner = harness.Runner(settings=harness.QUICK, measure_memory=False, interleave=True)
            return {r["backend"]: r for r in runner.measure_case(case)}[found.name]

        self.row = harness.keep_latest(("speedup", case_id, device, impl), build)

    def track_speedup(self, case_id, device, impl):
        return self.row["speedup"]
