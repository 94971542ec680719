"""asv benchmarks of the MetODS dynamic-synapse op, built from the cases behind ``metakern bench``
(family ``synapse``, ``metakern.bench.synapse``), so both suites time the same workloads: the fused
op against the naive autograd loop at issue 5's target size (B=64, T=200, N=64, S=2, float32;
forward + backward and forward only), the acting step (``metods_step``, B=64, N=64, S=2), and on
CUDA the GPU target (B=256, T=500).

Parameters: the case (``family/name/shape``), the device and the implementation, by its name in the
case (``cpp``, ``triton``, ``reference``, or the peers ``naive-autograd`` / ``naive-loop``).
``setup`` raises NotImplementedError, which asv reports as skipped, where the combination does not
exist or cannot run here (no GPU, a backend of the other device, the naive loop over its memory
limit). ``time_*`` synchronize the device after each call; ``peakmem_*`` is asv's process peak RSS;
``track_speedup`` and ``track_peak_mem_fraction`` compare with the naive loop (the case's baseline)
measured in the same process by the bench harness (quick settings; peak memory as
``metakern bench`` measures it).
"""

import functools

import torch
from metakern.bench import harness
from metakern.bench import synapse as cases

# Nothing here may initialise CUDA at import time (asv forks benchmark processes from a server that
# imported this module): the case list comes from the CPU cases plus the GPU-only target's id.
DEVICES = ["cpu", "cuda"]
_CPU_CASES = cases.synapse_cases("cpu", torch.float32)
_GPU_ONLY = f"{cases.FAMILY}/{cases.FWD_BWD}/{cases.shape_str(*cases.GPU_TARGET)}"
CASES = sorted({c.id for c in _CPU_CASES} | {_GPU_ONLY})
IMPLS = sorted({i.name for c in _CPU_CASES for i in c.impls} | {"triton"})


def _find(case_id, device, impl):
    return harness.find_on_device(
        _CPU_CASES, lambda dev: cases.synapse_cases(dev, torch.float32), case_id, device, impl
    )


class Synapse:
    """One call: the op (and the backward of a scalar loss for fwd+bwd), or the naive loop."""

    params = (CASES, DEVICES, IMPLS)
    param_names = ("case", "device", "impl")
    timeout = 600

    def setup(self, case_id, device, impl):
        find = functools.partial(_find, case_id, device, impl)
        _, self.fn, self.sync = harness.kept_warm((case_id, device, impl), find)

    def time_call(self, case_id, device, impl):
        self.fn()
        self.sync()

    def peakmem_call(self, case_id, device, impl):
        self.fn()


class SynapseVsNaive:
    """Speed-up over the naive loop and fraction of its peak memory,
    measured in one process, the two timed in alternating rounds (`harness.Runner(interleave=True)`)."""

    params = (CASES, DEVICES, [i for i in IMPLS if not i.startswith("naive")])
    param_names = ("case", "device", "impl")
    timeout = 600
    unit = "ratio"

    def setup(self, case_id, device, impl):
        def build():
            case, found = _find(case_id, device, impl)
            harness.find_runnable([case], case_id, case.baseline)  # the naive loop must run too
            case.impls = [i for i in case.impls if i.name in (case.baseline, found.name)]
            runner = harness.Runner(settings=harness.QUICK, interleave=True)
            rows = {r["backend"]: r for r in runner.measure_case(case)}
            return rows[found.name], rows[case.baseline]

        self.row, self.naive = harness.keep_latest(("vs-naive", case_id, device, impl), build)

    def track_speedup(self, case_id, device, impl):
        return self.row["speedup"]

    def track_peak_mem_fraction(self, case_id, device, impl):
        ours, theirs = self.row["peak_mem_bytes"], self.naive["peak_mem_bytes"]
        return ours / theirs if ours is not None and theirs else float("nan")  # nan: not measurable here
