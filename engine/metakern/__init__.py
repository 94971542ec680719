"""metakern: compiled C++/CUDA/Triton kernels for meta-reinforcement learning, as PyTorch ops."""

from . import policy  # noqa: F401  (metakern.policy.tabular_log_prob, linear_softmax_log_prob)
from ._backend import current_backend, use_backend
from .metods import MetODSPolicy
from .ops import linear_scan
from .ops.synapse import metods_step, metods_synapse
from .returns import discounted_returns, gae, lambda_returns, vtrace

__version__ = "0.1.0"

__all__ = [
    "MetODSPolicy",
    "__version__",
    "current_backend",
    "discounted_returns",
    "gae",
    "lambda_returns",
    "linear_scan",
    "metods_step",
    "metods_synapse",
    "use_backend",
    "vtrace",
]
