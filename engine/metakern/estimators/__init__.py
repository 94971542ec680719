"""Meta-gradient estimators of gradient-based meta-RL (MAML, DiCE, Loaded DiCE, LVC, ...).

``metakern.estimators.reference`` holds the readable plain-torch objectives, differentiated by
autograd: the oracle the fused estimator ops are tested against.
"""

from . import reference

__all__ = ["reference"]
