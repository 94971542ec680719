"""asv benchmarks of end-to-end recurrent meta-RL training (issue 8's target), built from the cases
behind ``metakern bench`` (family ``recurrent``, ``metakern.bench.recurrent``), so both suites time
the same workloads: one training iteration (rollout + PPO update) of RL2-PPO on Krazy World
(1024 envs x 50 steps) and of MetODS-PPO on MetODS' maze (256 envs x 100 steps).

Parameters: the case (``family/name/shape``) and the implementation, ``cpp`` (metakern's
``RecurrentAgent``: batched C++ environments, fused GAE and synapse ops) or ``gym-sync-torch``
(gymnasium ``SyncVectorEnv`` of the numpy reference env + a plain torch agent and PPO loop).
``time_iteration`` is one training iteration; ``track_env_steps_per_s`` reports env-steps/s from the
same call timed by the bench harness; ``track_speedup`` is cpp's speed-up over ``gym-sync-torch``
measured in one process (quick settings).
"""

import functools

import torch
from metakern.bench import harness
from metakern.bench import recurrent as cases


def _cases():
    return list(harness.families()[cases.FAMILY](torch.device("cpu"), torch.float32))


CASES = [c.id for c in _cases()]
IMPLS = ["cpp", cases.BASELINE]


def _find(case_id, impl):
    return harness.find_runnable(_cases(), case_id, impl)


class RecurrentTraining:
    """One training iteration: collect B x T env-steps, then the PPO update."""

    params = (CASES, IMPLS)
    param_names = ("case", "impl")
    timeout = 900

    def setup(self, case_id, impl):
        find = functools.partial(_find, case_id, impl)
        self.case, self.fn, self.sync = harness.kept_warm((cases.FAMILY, case_id, impl), find)

    def time_iteration(self, case_id, impl):
        self.fn()

    def track_env_steps_per_s(self, case_id, impl):
        timing = harness.time_callable(self.fn, self.case.device, harness.QUICK)
        return self.case.items / timing.median_s

    track_env_steps_per_s.unit = "env-steps/s"


class RecurrentSpeedup:
    """Speed-up over the gymnasium + plain torch loop (the case's baseline),
    measured in one process, the two timed in alternating rounds (`harness.Runner(interleave=True)`)."""

    params = (CASES, ["cpp"])
    param_names = ("case", "impl")
    timeout = 900
    unit = "ratio"

    def setup(self, case_id, impl):
        def build():
            case, found = _find(case_id, impl)
            case.impls = [i for i in case.impls if i.name in (case.baseline, found.name)]
            runner = harness.Runner(settings=harness.QUICK, measure_memory=False, interleave=True)
            return {r["backend"]: r for r in runner.measure_case(case)}[found.name]

        self.row = harness.keep_latest(("speedup", case_id, impl), build)

    def track_speedup(self, case_id, impl):
        return self.row["speedup"]
