"""asv benchmarks of end-to-end MAML meta-training on Krazy World, built from the case behind
``metakern bench`` (family ``maml``), so both suites time the same workload.

Parameter: the implementation, ``cpp`` (``metakern.algos.maml.MAML.step``: batched C++ Krazy World,
fused log-prob and estimator ops) or ``gym-sync-autograd`` (gymnasium ``SyncVectorEnv`` of the numpy
reference env + autograd double backward), on ``maml/krazyworld-meta-iteration/N=32,E=8,K=1``.
``time_meta_iteration`` is one meta-iteration (inner + outer update) from theta = 0;
``track_env_steps_per_s`` reports env-steps/s from the same call timed by the bench harness.
"""

import torch
from metakern.bench import harness

CASE = "maml/krazyworld-meta-iteration/N=32,E=8,K=1"
IMPLS = ["cpp", "gym-sync-autograd"]


class MAMLMetaIteration:
    """One MAML meta-iteration: 32 tasks x 8 episodes before and after one inner step."""

    params = (IMPLS,)
    param_names = ("impl",)
    timeout = 600

    def setup(self, impl):
        def find():
            return harness.find_runnable(harness.families()["maml"](torch.device("cpu"), torch.float32), CASE, impl)

        self.case, self.fn, self.sync = harness.kept_warm(("maml", CASE, impl), find)

    def time_meta_iteration(self, impl):
        self.fn()

    def track_env_steps_per_s(self, impl):
        timing = harness.time_callable(self.fn, self.case.device, harness.QUICK)
        return self.case.items / timing.median_s

    track_env_steps_per_s.unit = "env-steps/s"
