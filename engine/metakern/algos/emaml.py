"""E-MAML (Stadie et al. 2018): MAML-RL plus the exploration term (``maml.py`` has the algorithm).

The exploration term reinforces the pre-update episodes with the post-update return, so the
meta-learner is credited for sampling episodes that make the adaptation step useful. As in the
reference code (ProMP issue #8: the E-MAML and MAML scripts differ only by ``exploration=True``),
E-MAML here is MAML with ``exploration_weight`` = 1 (``e_maml_lambda`` default 1.0 in
geyang/e-maml), every other setting shared, so the two are compared like for like.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from .maml import MAML, MAMLConfig
from .maml import train as _train


@dataclass
class EMAMLConfig(MAMLConfig):
    exploration_weight: float = 1.0


def train(config: EMAMLConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True):
    """``maml.train`` with the E-MAML config (see its docstring)."""
    return _train(config, run_dir, resume=resume, progress=progress, algo_cls=MAML, name="emaml")


CONFIG = EMAMLConfig
ENVS = ("krazyworld", "maze", "tabular")
FIELDS = tuple(f.name for f in fields(EMAMLConfig))
