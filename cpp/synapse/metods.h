// MetODS dynamic synapses: the fused recurrent op over a sequence and its checkpointed backward.
//
// Math (Algorithm 1 of Chalvidal et al. 2022; reference: engine/metakern/ops/synapse_reference.py).
// Per sequence b and step t: W_in = W0 if t == 0 or reset[b, t], else the previous step's W_out.
// v_0 = v0[b, t]. With beta scalars the write recursion has the closed form
//   W^(s) = gamma[s] W_in + alpha * sum_{j<s} coef[s, j] v_j v_j^T          (gamma[0] = 1)
// (coefficients from beta on the host: synapse_coefficients), so for s = 1..S
//   p_s = W^(s-1) v_{s-1} = gamma[s-1] W_in v_{s-1} + sum_{j<s-1} coef[s-1, j] v_j * (alpha (v_j * v_{s-1}))
//   v_s = sum_{l<s} kappa[s-1, l] v_l + kappa[s-1, s] sigma(p_s)
//   W_out = gamma[S] W_in + alpha * sum_{j<S} coef[S, j] v_j v_j^T
// and the step emits v_S. Only W_in, alpha and S+1 vectors are live: no W^(s) is formed.
//
// Cost per step and sequence (N x N elements): the forward makes S read passes (gamma W x plus the
// alpha terms, 1 + (s - 1) multiply-adds per element in pass s) and one write pass (S + 1); the
// backward makes one recompute pass, an adjoint pass for the write (2 S + 3), S - 1 inner passes
// (1 + 2 (s - 1)) and a final pass (about 3 S + S (S - 1) / 2 + 3). Every pass adds scaled rows into
// N-vectors ("axpy form", no per-row horizontal sums): the forward keeps W transposed, the backward
// carries dW and dW^T, and alpha^T is kept next to alpha.
//
// Memory. The forward saves, per step, v_1..v_S and p_1..p_S (2 S N values) and, per sequence, the
// input matrix W_in of every C-th step (ceil(T / C) - 1 matrices; step 0's is W0). The backward walks
// the segments of C steps in reverse, recomputes the W_in of each step of a segment from its
// checkpoint (the write is an elementwise update of the saved vectors, no reads) and runs the adjoint
// of the steps on them. A segment of up to 64 steps is recomputed in one go (C matrices of scratch per
// worker thread); a longer one (a caller asking for few checkpoints, e.g. C = T) first recomputes
// every C2-th matrix, C2 = ceil(sqrt(C)), then each sub-segment (two recompute passes per step,
// ceil(C / C2) + C2 matrices of scratch). With C ~ N / (2 S) (the Python default) checkpoints cost
// about what the vectors cost: O(B T S N) in all, no T N^2 term.
//
// Determinism: sequences form G = min(B, 64) fixed contiguous groups; each group accumulates the
// shared gradients (alpha, kappa, gamma, coef, a broadcast W0) in sequence order, and the groups are
// summed in group order. Results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace metakern {

enum class SynapseActivation : int { Tanh = 0, Relu = 1, Identity = 2 };

struct MetodsArgs {
  int64_t B = 0, T = 0, N = 0;
  int S = 0;
  int activation = 0;   // SynapseActivation
  int64_t checkpoint_every = 0;  // C >= 1
  bool w0_batched = false;       // W0 is [B, N, N] (else [N, N], shared)
  int num_threads = 0;           // 0: OpenMP default
};

// Forward. v0 [B, T, N]; W0 [B, N, N] or [N, N]; alpha [N, N]; kappa [S, S+1]; gamma [S+1];
// coef [S+1, S]; reset [B, T] bytes or null. Writes vS [B, T, N] and WT [B, N, N]. When vs is
// non-null also writes the saved tensors vs, ps [B, T, S, N] and ckpt [B, K, N, N],
// K = ceil(T / C) - 1 (ckpt may be null when K == 0).
void metods_forward_cpu(DType dt, const MetodsArgs& a, const void* v0, const void* W0, const void* alpha,
                        const void* kappa, const void* gamma, const void* coef, const uint8_t* reset,
                        void* vS, void* WT, void* vs, void* ps, void* ckpt);

// Backward from gvS [B, T, N] and gWT [B, N, N] (either may be null: zero). Writes dv0 [B, T, N],
// dW0 (the shape of W0), dalpha [N, N], dkappa [S, S+1], dgamma [S+1] and dcoef [S+1, S].
void metods_backward_cpu(DType dt, const MetodsArgs& a, const void* gvS, const void* gWT, const void* v0,
                         const void* W0, const void* alpha, const void* kappa, const void* gamma,
                         const void* coef, const uint8_t* reset, const void* vs, const void* ps,
                         const void* ckpt, void* dv0, void* dW0, void* dalpha, void* dkappa, void* dgamma,
                         void* dcoef);

}  // namespace metakern
