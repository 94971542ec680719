// Closed-form value, gradient and Hessian-vector product of estimator objectives for a tabular softmax
// policy, two passes over each trajectory (the second over an L1-resident copy); float64.
//
// With l_t = log pi(a_t|s_t), pi = softmax(theta) per state, g = dJ/dl, H_l = d^2J/dl^2 and
// u_t = grad l_t . v = v[s_t, a_t] - <pi_{s_t}, v_{s_t}>, the kernel sums g_t and y_t = (H_l u)_t over all
// steps per (s, a), and returns the objective's value, gradient and Hessian-vector product (batch means):
//   grad = sum_t g_t grad l_t = at_g - pi * st_g,   at_g[s, a] = sum_{t: (s_t, a_t) = (s, a)} g_t, st_g[s] = sum_a at_g
//   H v  = at_y - pi * st_y - st_g * pi * (v - <pi, v>)          (the last term: sum_t g_t (grad^2 l_t) v)
// Estimators (w_t = gamma^t signal_t):
//   0 dice:         g_k = sum_{t>=k} w_t,  y_j = sum_{t>=j} w_t U_t, U_t = sum_{k<=t} u_k
//   1 loaded_dice:  g_k = w_k,             y_j = w_j F_j + R_j - w_j u_j (F, R: lam-scans of u, w u)
//   2 lvc:          g_k = w_k,             y_j = w_j u_j
// Rows are split statically across threads; each thread sums into its own buffers, which are
// added in thread order, so results are deterministic for a given thread count. States and actions
// are int64 or (idx32) int32; the kernel checks their range as it reads them and returns the flat
// index of the first step (in its row-major order) with an out-of-range state or action, or -1.
#pragma once
#include <cstdint>

namespace metakern {

int64_t tabular_estimator_derivatives_cpu(int estimator, const double* theta, const double* v, const void* states,
                                          const void* actions, bool idx32, const double* signal, int64_t B,
                                          int64_t T, int64_t S, int64_t A, double gamma, double lam, double* grad,
                                          double* hvp, double* value, int num_threads);

}  // namespace metakern
