"""Readable reference for the MetODS dynamic-synapse recurrence: Algorithm 1 of Chalvidal et al.
(NeurIPS 2022), written as the naive loop that plain autograd differentiates. It is the test oracle
of the fused op (``metakern.ops.synapse``) and the "naive autograd" baseline of its benchmarks.

Per sequence b and step t, with W the synaptic matrix carried over time (W = W0 at t = 0 and
wherever ``reset[b, t]`` is set), v^(0) = v0[b, t] and W^(0) = W, for s = 1..S:

    v^(s) = sum_{l<s} kappa[s-1, l] v^(l) + kappa[s-1, s] sigma(W^(s-1) v^(s-1))
    W^(s) = sum_{l<s} beta[s-1, l] W^(l)  + beta[s-1, s] alpha * (v^(s-1) v^(s-1)^T)

then the output is v^(S) and W <- W^(S). ``kappa`` and ``beta`` are [S, S+1]: row s-1 holds the
coefficients of inner step s; entries with l > s are not used. (W v)_i = sum_k W[i, k] v_k.

Memory: autograd keeps every W^(s) and the alpha * v v^T temporaries, about B*T*(2S+1)*N*N values.
"""

from __future__ import annotations

import torch

ACTIVATIONS = ("tanh", "relu", "identity")


def activation_fn(name: str):
    if name == "tanh":
        return torch.tanh
    if name == "relu":
        return torch.relu
    if name == "identity":
        return lambda x: x
    raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {name!r}")


def synapse_coefficients(beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed form of the write recursion for scalar beta (differentiable in beta).

    By induction W^(s) = gamma[s] W^(0) + alpha * sum_{j<s} coef[s, j] v^(j) v^(j)^T with
    gamma[0] = 1, gamma[s] = sum_{l<s} beta[s-1, l] gamma[l] and
    coef[s, j] = sum_{j<l<s} beta[s-1, l] coef[l, j] + [j = s-1] beta[s-1, s].
    Returns gamma [S+1] and coef [S+1, S] (zero where j >= s)."""
    S = beta.shape[0]
    gamma = [beta.new_ones(())]
    coef = [beta.new_zeros(S)]
    for s in range(1, S + 1):
        row = beta[s - 1]
        gamma.append(sum(row[l] * gamma[l] for l in range(s)))
        entries = []
        for j in range(S):
            if j >= s:
                entries.append(beta.new_zeros(()))
                continue
            value = sum((row[l] * coef[l][j] for l in range(j + 1, s)), beta.new_zeros(()))
            if j == s - 1:
                value = value + row[s]
            entries.append(value)
        coef.append(torch.stack(entries))
    return torch.stack(gamma), torch.stack(coef)


def metods_synapse_reference(
    v0: torch.Tensor,
    W0: torch.Tensor,
    alpha: torch.Tensor,
    kappa: torch.Tensor,
    beta: torch.Tensor,
    reset: torch.Tensor | None = None,
    activation: str = "tanh",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive loop: returns (v_S [B, T, N], W_T [B, N, N]). Computes in float64 for float64
    inputs and float32 otherwise; v_S has v0's dtype, W_T the compute dtype."""
    sigma = activation_fn(activation)
    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    B, T, N = v0.shape
    S = kappa.shape[0]
    x = v0.to(dtype)
    W0b = W0.to(dtype).expand(B, N, N)
    alpha = alpha.to(dtype)
    W = W0b
    outputs = []
    for t in range(T):
        if reset is not None and t > 0:
            W = torch.where(reset[:, t].reshape(B, 1, 1).bool(), W0b, W)
        vs = [x[:, t]]
        Ws = [W]
        for s in range(1, S + 1):
            h = sigma(torch.bmm(Ws[s - 1], vs[s - 1].unsqueeze(-1)).squeeze(-1))
            v = kappa[s - 1, s] * h
            for l in range(s):
                v = v + kappa[s - 1, l] * vs[l]
            Wn = beta[s - 1, s] * (alpha * (vs[s - 1].unsqueeze(-1) * vs[s - 1].unsqueeze(-2)))
            for l in range(s):
                Wn = Wn + beta[s - 1, l] * Ws[l]
            vs.append(v)
            Ws.append(Wn)
        outputs.append(vs[S])
        W = Ws[S]
    return torch.stack(outputs, dim=1).to(v0.dtype), W
