"""Reference softmax-policy log-probabilities: log_softmax and a gather in plain torch.

Readable and differentiable by autograd to any order: the oracle the fused ops of
``metakern.ops.policy`` are tested against, and their ``reference`` backend. Shapes are those of
the public ops: a single policy (theta [S, A] or weight [F, A], indices [B, T], features
[B, T, F]) or one policy per task with a leading task dimension N on every tensor.
"""

from __future__ import annotations

import torch


def _task_view(x: torch.Tensor, n_dims: int) -> torch.Tensor:
    """x with a leading task dimension (size 1 for a single policy): [N, ...] with n_dims + 1 dims."""
    return x if x.dim() == n_dims + 1 else x.unsqueeze(0)


def tabular_log_prob_reference(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """l = log_softmax(theta, -1)[s, a] per step: theta [S, A] with states/actions [B, T], or
    theta [N, S, A] with [N, B, T]. Returns states' shape in theta's dtype."""
    theta3 = _task_view(theta, 2)
    N, S, A = theta3.shape
    flat = (states.long() * A + actions.long()).reshape(N, -1)  # (s, a) -> s * A + a
    logp = torch.log_softmax(theta3, dim=-1).reshape(N, S * A)
    return logp.gather(1, flat).reshape(states.shape)


def linear_softmax_log_prob_reference(
    weight: torch.Tensor, features: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """l = log_softmax(features @ weight, -1)[a] per step: weight [F, A] with features [B, T, F] and
    actions [B, T], or weight [N, F, A] with [N, B, T, F] and [N, B, T]."""
    w3 = _task_view(weight, 2)
    N, F, _ = w3.shape
    x = features.reshape(N, -1, F)
    logp = torch.log_softmax(torch.bmm(x, w3), dim=-1)  # [N, M, A]
    return logp.gather(2, actions.long().reshape(N, -1, 1)).reshape(actions.shape)
