"""E-MAML (Stadie et al. 2018): MAML-RL plus the exploration term (``maml.py`` has the algorithm).

The exploration term reinforces the pre-update episodes with the post-update return, so the
meta-learner is credited for sampling episodes that make the adaptation step useful. As in the
reference code (ProMP issue #8: the E-MAML and MAML scripts differ only by ``exploration=True``),
E-MAML here is MAML with ``exploration_weight`` = 1 (``e_maml_lambda`` default 1.0 in
geyang/e-maml), every other setting shared, so the two are compared like for like.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from . import maml
from .rollout import ENVS


@dataclass
class EMAMLConfig(maml.MAMLConfig):
    exploration_weight: float = 1.0


train = functools.partial(maml.train, name="emaml")  # maml.train with the E-MAML config
CONFIG = EMAMLConfig
__all__ = ["CONFIG", "ENVS", "EMAMLConfig", "train"]
