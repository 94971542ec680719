"""asv benchmarks of the gridworld environments (``metakern.envs``), built from the cases behind
``metakern bench`` (family ``envs``), so both suites time the same workloads.

Parameters: the case (``envs/<family>.step/B=...,K=...``), the device and the implementation
(``cpp``, ``cuda``, ``reference`` or a peer: ``gym-sync``, ``minigrid``, ``gymnax-metamaze``,
``gymnax-fourrooms``). ``setup`` raises NotImplementedError (asv: skipped) where the combination
does not exist or cannot run here. ``time_steps`` is one call (B * K env-steps);
``track_env_steps_per_s`` reports env-steps/s from the same call timed by the bench harness.
"""

import functools

import torch
from metakern.bench import harness

DEVICES = ["cpu", "cuda"]


def _cases(device):
    factories = harness.families()
    return list(factories["envs"](torch.device(device), torch.float32)) if "envs" in factories else []


_CPU_CASES = _cases("cpu")
CASES = sorted({c.id for c in _CPU_CASES} | {"envs/krazy.step/B=1048576,K=8"})
IMPLS = sorted({i.name for c in _CPU_CASES for i in c.impls} | {"cuda"})


def _find(case_id, device, impl):
    return harness.find_on_device(_CPU_CASES, _cases, case_id, device, impl)


class EnvStep:
    """B * K random env-steps per call, autoreset on."""

    params = (CASES, DEVICES, IMPLS)
    param_names = ("case", "device", "impl")
    timeout = 600

    def setup(self, case_id, device, impl):
        find = functools.partial(_find, case_id, device, impl)
        self.case, self.fn, self.sync = harness.kept_warm((case_id, device, impl), find)

    def time_steps(self, case_id, device, impl):
        self.fn()
        self.sync()

    def track_env_steps_per_s(self, case_id, device, impl):
        timing = harness.time_callable(self.fn, self.case.device, harness.QUICK)
        return self.case.items / timing.median_s

    track_env_steps_per_s.unit = "env-steps/s"
