"""Meta-gradient estimators of gradient-based meta-RL (MAML, E-MAML, DiCE, Loaded DiCE, LVC, TayPO, DR).

``metakern.estimators.dice`` etc. are the fused ops (``metakern.estimators.ops``): closed-form
log-prob gradients and Hessian-vector products, differentiable twice, with done masks.
``metakern.estimators.reference`` holds the readable plain-torch objectives, differentiated by
autograd: the oracle the fused ops are tested against. ``metakern.estimators.tabular`` gives the
parameter-space gradient and HVP of a tabular softmax policy in one fused call.
"""

from . import reference
from .ops import (
    dice,
    dice_baseline,
    doubly_robust,
    e_maml_term,
    loaded_dice,
    lvc,
    maml_surrogate,
    off_policy_dice,
    taypo,
)

__all__ = [
    "dice",
    "dice_baseline",
    "doubly_robust",
    "e_maml_term",
    "loaded_dice",
    "lvc",
    "maml_surrogate",
    "off_policy_dice",
    "reference",
    "taypo",
]
