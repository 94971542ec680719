"""MetODS (Chalvidal et al. 2022): an actor-critic whose memory is one layer of dynamic synapses.

``metakern.metods.MetODSPolicy`` on the fused synapse op: per step, S read/write steps rewrite the
synaptic matrix W (reset where a trial starts); acting is one ``metods_step`` call per step,
training one ``metods_synapse`` call per window, whose backward recomputes instead of storing every
W. Trained by the recurrent PPO / A2C of ``recurrent.py`` (the paper trains with a policy gradient
over mini-batches of tasks, Eq. 6). Defaults: the paper's maze (``maze_variant="metods"``), S = 2
inner steps, learned plasticity alpha; ``--inner-steps 1`` and ``--no-learn-alpha`` are the Harlow
ablations.
"""

import functools
from dataclasses import dataclass
from typing import ClassVar

from . import recurrent
from .run import check_ints, check_reals


@dataclass
class MetODSConfig(recurrent.RecurrentConfig):
    """MetODS settings (``metakern train metods``): N = ``hidden`` neurons, S = ``inner_steps``,
    ``learn_alpha`` (False: alpha stays at its random init), ``decay`` (W's per-step decay at init)."""

    AGENT: ClassVar[str] = "metods"

    env: str = "maze"
    maze_variant: str = "metods"
    inner_steps: int = 2
    learn_alpha: bool = True
    decay: float = 0.95

    def validate(self) -> "MetODSConfig":
        super().validate()
        check_ints(self, ("inner_steps",))
        if self.inner_steps > 16:
            raise ValueError(f"inner_steps must be at most 16, got {self.inner_steps}")
        check_reals(self, (("decay", 1e-6, 1.0),))
        return self


CONFIG = MetODSConfig
ENVS = recurrent.ENVS
train = functools.partial(recurrent.train, name="metods")
