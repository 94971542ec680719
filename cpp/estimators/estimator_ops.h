// Closed-form log-prob-space derivatives of the magic-box estimator objectives (metakern::estimator_*).
//
// Every row b of the [B, T] inputs holds one or more episodes (dones[b, t] != 0 ends one after step t).
// With l_t the log-probability of step t and d_t = gamma^(t - start of its episode), each objective J
// of a row has, as a function of l, the gradient g = dJ/dl and a Hessian of the form
//
//     H[j, k] = h_max(j,k) * prod_{i = min+1 .. max} lam_i   (zero across episodes)   +   diag(e)
//
// so H u needs one forward and one reverse pass (never a T x T matrix):
//
//     F_j = lam_j F_{j-1} + u_j,   R_j = h_j u_j + lam_{j+1} R_{j+1},   (H u)_j = h_j (F_j - u_j) + R_j + e_j u_j.
//
// kind          value                  g                        h            lam      e
// kMaml         sum d A l              d A                      0            -        0
// kDice         sum d r                rcs(d r)                 rcs(d r)     1        0
// kDiceBaseline sum d r                rcs(d r) - d V           rcs(d r)     1        -d V
// kLoadedDice   0                      d A                      d A          lam      0
// kLvc          sum d G                d G                      d G          0        0
// kOffPolicy    sum W d r              rcs(W' d r)              rcs(W' d r)  1        0
//
// rcs = reverse cumulative sum within the episode; W_t = exp(min(C_t, cap)), C_t the episode's cumulative
// sum of l - behaviour, W' = W where C_t <= cap and 0 where it is clamped (the derivative of the clamp).
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace metakern {

enum EstimatorKind : int { kMaml = 0, kDice = 1, kDiceBaseline = 2, kLoadedDice = 3, kLvc = 4, kOffPolicy = 5 };

// Any of value, g, y may be null (not computed); u is needed only for y. signal is r, A or G by kind;
// values (kDiceBaseline) and behaviour (kOffPolicy) may be null otherwise; dones (uint8) may be null.
void estimator_terms_cpu(DType dtype, int kind, const void* logp, const void* signal, const void* values,
                         const void* behaviour, const uint8_t* dones, const void* u, void* value, void* g,
                         void* y, int64_t B, int64_t T, double gamma, double lam, double cap, int num_threads);

}  // namespace metakern
