// Closed-form gradient and Hessian-vector product terms of estimator objectives for a tabular
// softmax policy, one pass (two for DiCE / Loaded DiCE) over each trajectory; float64.
//
// With l_t = log pi(a_t|s_t), g = dJ/dl, H_l = d^2J/dl^2 and u_t = v[s_t, a_t] - <pi_{s_t}, v_{s_t}>,
// the kernel returns the per-(s, a) and per-s sums of g_t and of y_t = (H_l u)_t over all steps:
//   at_g[s*A + a] = sum_{t: (s_t, a_t) = (s, a)} g_t,   st_g[s] = sum_{t: s_t = s} g_t,  likewise y,
// and value = the objective; engine/metakern/estimators/tabular.py assembles grad and H v from them.
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

int64_t tabular_estimator_terms_cpu(int estimator, const double* v, const double* pv, const void* states,
                                    const void* actions, bool idx32, const double* signal, int64_t B, int64_t T, int64_t S,
                                 int64_t A, double gamma, double lam, double* at_g, double* st_g, double* at_y,
                                 double* st_y, double* value, int num_threads);

}  // namespace metakern
