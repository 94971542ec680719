"""Softmax-policy log-probabilities with closed-form first and second derivatives.

``tabular_log_prob(theta, states, actions)`` and ``linear_softmax_log_prob(weight, features,
actions)`` return per-step log-probabilities ``l`` [B, T] to feed any objective J(l) (the
estimators of ``metakern.estimators``, a policy-gradient loss); gradients and Hessian-vector
products of J in parameter space then run through fused kernels (``metakern.ops.policy``).
"""

from .ops.policy import linear_softmax_log_prob, tabular_log_prob
from .ops.policy_reference import linear_softmax_log_prob_reference, tabular_log_prob_reference

__all__ = [
    "linear_softmax_log_prob",
    "linear_softmax_log_prob_reference",
    "tabular_log_prob",
    "tabular_log_prob_reference",
]
