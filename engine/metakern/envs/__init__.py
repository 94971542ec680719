"""Vectorized gridworld environments: torch-native batched stepping on CPU (C++) and CUDA.

Families (each a factory returning a ``BatchedEnv``, the functional API of ``core``):

====================  ============================================================
``KrazyWorld``        Krazy World 2.0 (E-MAML), with the legacy variant's options
``Maze``              procedural perfect mazes, RL2-style trials (E-MAML / E-RL2)
``GridNavi``          VariBAD / LDM goal navigation, 5x5 and 7x7 with LDM's split
``TabularMDP``        RL2's random tabular MDPs, with their exact solution
``IPD``               iterated prisoner's dilemma (LOLA-DiCE), two agents
``Harlow``            MetODS's Harlow task: which of two objects pays, one-shot
====================  ============================================================

Importing this package registers the gymnasium ids ``metakern/<Name>-v0`` (``registration``).
"""

import importlib

from . import registration
from .core import AutoresetMode, BatchedEnv, Family, StepResult
from .gridnavi import GridNavi, GridNaviFamily, gridnavi_goals

# Family factories and helpers by name -> module; imported on first use.
_LAZY = {
    "KrazyWorld": "krazy",
    "KrazyFamily": "krazy",
    "Maze": "maze",
    "MazeFamily": "maze",
    "generate_mazes": "maze",
    "TabularMDP": "tabular",
    "TabularMDPFamily": "tabular",
    "IPD": "ipd",
    "IPDFamily": "ipd",
    "ipd_exact_value": "ipd",
    "Harlow": "harlow",
    "HarlowFamily": "harlow",
    "MetakernVectorEnv": "gym",
    "MetakernEnv": "gym",
    "save_gif": "render",
    "record_episode": "render",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AutoresetMode",
    "BatchedEnv",
    "Family",
    "GridNavi",
    "GridNaviFamily",
    "StepResult",
    "gridnavi_goals",
    *_LAZY,
]

registration.register_all()
