// Exact K-step MAML meta-gradients of tabular softmax policies, batched over MDPs (float64).
//
// Per task (S states, A actions): pi = softmax(theta), M = (I - gamma P_pi)^{-1}, V = M r_pi,
// Q = R + gamma P V, d = M^T init, grad J = d pi (Q - V); the inner loop is
// theta_{k+1} = theta_k + alpha grad J(theta_k), and the meta-gradient dJ(theta_K)/dtheta_0 is the
// reverse pass v <- v + alpha H(theta_k) v (exact HVPs; formulas in engine/metakern/oracle.py).
//
// I - gamma P_pi is strictly row diagonally dominant for gamma < 1, so its LU factorisation needs
// no pivoting: every task runs the same instructions, and the kernel processes tasks in SIMD
// lanes (8 doubles per vector), structure-of-arrays, one group of 8 tasks per OpenMP work item.
// Cost per task: (K+1) * (S^3/3 + 4 S^2 A) + K * (6 S^2 A) flops. Measured limit (perf, 2-core
// EPYC): a group's P (8 tasks x S*A*S doubles = 128 KiB at S=20, A=5) does not fit in L1, and it is
// streamed from L2 twice per evaluation and once per HVP; at K = 3 that streaming is most of the
// ~65 us a group takes. Faster needs a blocking that keeps a slice of P in L1 across passes (or
// fewer tasks per group with narrower vectors).
#pragma once
#include <cstdint>

namespace metakern {

// P [B, S, A, S], R [B, S, A], init [B, S], theta0 [B, S, A] (contiguous float64).
// Outputs: meta_grad [B, S, A], objective [B] (J(theta_K)), thetas [K+1, B, S, A] (theta_0..K).
void oracle_maml_meta_gradient_cpu(const double* P, const double* R, const double* init,
                                   const double* theta0, int64_t B, int64_t S, int64_t A,
                                   double gamma, double alpha, int64_t K, double* meta_grad,
                                   double* objective, double* thetas, int num_threads);

}  // namespace metakern
