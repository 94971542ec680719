"""asv benchmarks of metakern's batched MuJoCo environments (``metakern.envs.mujoco``), built from
the case behind ``metakern bench`` (family ``mujoco``), so both suites time the same workload.

Parameter: the implementation, ``cpp`` (``MujocoBatchedEnv("HalfCheetahVel", 64)`` on its thread
pool) or ``gym-sync`` (gymnasium's ``SyncVectorEnv`` of 64 wrapped ``HalfCheetah-v5``), on the case
``mujoco/halfcheetah-vel/B=64,K=16``. ``setup`` raises NotImplementedError (asv: skipped) where
it cannot run here: no ``mujoco`` package, or the engine not built. ``time_step`` is one call
(B * K = 1024 env-steps, autoreset on); ``track_env_steps_per_s`` reports env-steps/s from the
same call timed by the bench harness.
"""

import torch
from metakern.bench import harness

CASE = "mujoco/halfcheetah-vel/B=64,K=16"
IMPLS = ["cpp", "gym-sync"]


def _cases():
    factories = harness.families()
    if "mujoco" not in factories:
        why = harness.family_import_errors().get("mujoco", "the mujoco family is not registered")
        raise NotImplementedError(why)
    return list(factories["mujoco"](torch.device("cpu"), torch.float32))


class MujocoStep:
    """B * K random env-steps of HalfCheetah-Vel per call, 200-step episodes, autoreset on."""

    params = (IMPLS,)
    param_names = ("impl",)
    timeout = 300

    def setup(self, impl):
        def find():
            return harness.find_runnable(_cases(), CASE, impl)

        self.case, self.fn, self.sync = harness.kept_warm(("mujoco", CASE, impl), find)

    def time_step(self, impl):
        self.fn()
        self.sync()

    def track_env_steps_per_s(self, impl):
        timing = harness.time_callable(self.fn, self.case.device, harness.QUICK)
        return self.case.items / timing.median_s

    track_env_steps_per_s.unit = "env-steps/s"
