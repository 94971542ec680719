// Log-probabilities of softmax policies and their closed-form derivatives, float32/float64.
//
// Tabular:        l[n, m] = log_softmax(theta[n, s, :])[a],        s = states[n, m], a = actions[n, m]
// Linear-softmax: l[n, m] = log_softmax(features[n, m, :] @ W[n])[a],                a = actions[n, m]
// theta is [N, S, A]; W is [N, F, A]; features [N, M, F]; states, actions, l are [N, M] (N tasks of M
// steps each; a single policy is N = 1). With pi the policy at the step's state and d = e_a - pi:
//
//   backward (VJP of gl):           tabular  grad_theta[n, s] = sum_{m: s_m = s} gl_m d_m
//                                   linear   grad_W[n] = sum_m gl_m phi_m d_m^T,  grad_phi_m = gl_m W d_m
//   double backward (VJP of the backward, given the cotangents V of its outputs; y_m = the logit
//   change in direction V: tabular y_m = V[s_m], linear y_m = phi_m V_W + V_phi_m W):
//     d gl_m    = u_m = y_m[a_m] - <pi_m, y_m>                 (the JVP of l in direction V)
//     q_m       = -gl_m (diag pi_m - pi_m pi_m^T) y_m           (the second-order term per step)
//     tabular:  d theta[n, s] = sum_{m: s_m = s} q_m
//                             = -(sum_{m: s_m = s} gl_m) (diag pi_s - pi_s pi_s^T) V[s]
//     linear:   d W = sum_m phi_m q_m^T + V_phi_m (gl_m d_m)^T,   d phi_m = W q_m + V_W (gl_m d_m)
//
// Sums over steps (the scatter-adds into theta's [S, A] bins or W's [F, A]) are deterministic: the
// M steps of a task are cut into chunks whose length depends only on the sizes, never on the thread
// count; each chunk adds into its own bins in step order, and the bins are reduced in chunk order.
// No atomics, and the same bits for any number of threads.
//
// Indices are int32 (index_code 0) or int64 (1). A step whose state or action is out of range is
// skipped (nothing is read or written out of bounds) and the kernels return the flat index
// n * M + m of the first such step, or -1 when all are valid; the caller raises. Nullable outputs
// (and nullable cotangents, meaning zero) are skipped. num_threads <= 0 means OpenMP's default.
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace metakern {

int64_t tabular_log_prob_cpu(DType dtype, int index_code, const void* theta, const void* states,
                             const void* actions, void* out, int64_t N, int64_t M, int64_t S, int64_t A,
                             int num_threads);

int64_t tabular_log_prob_backward_cpu(DType dtype, int index_code, const void* gl, const void* theta,
                                      const void* states, const void* actions, void* grad_theta, int64_t N,
                                      int64_t M, int64_t S, int64_t A, int num_threads);

// u [N, M] and d_theta [N, S, A] may each be null.
int64_t tabular_log_prob_double_backward_cpu(DType dtype, int index_code, const void* gl, const void* theta,
                                             const void* states, const void* actions, const void* v, void* u,
                                             void* d_theta, int64_t N, int64_t M, int64_t S, int64_t A,
                                             int num_threads);

int64_t linear_softmax_log_prob_cpu(DType dtype, int index_code, const void* weight, const void* features,
                                    const void* actions, void* out, int64_t N, int64_t M, int64_t F,
                                    int64_t A, int num_threads);

// grad_weight [N, F, A] and grad_features [N, M, F] may each be null.
int64_t linear_softmax_log_prob_backward_cpu(DType dtype, int index_code, const void* gl, const void* weight,
                                             const void* features, const void* actions, void* grad_weight,
                                             void* grad_features, int64_t N, int64_t M, int64_t F, int64_t A,
                                             int num_threads);

// v_weight [N, F, A] and v_features [N, M, F] may be null (zero); u, d_weight, d_features may be null.
int64_t linear_softmax_log_prob_double_backward_cpu(DType dtype, int index_code, const void* gl,
                                                    const void* weight, const void* features,
                                                    const void* actions, const void* v_weight,
                                                    const void* v_features, void* u, void* d_weight,
                                                    void* d_features, int64_t N, int64_t M, int64_t F,
                                                    int64_t A, int num_threads);

}  // namespace metakern
