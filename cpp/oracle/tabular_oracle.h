// Exact K-step MAML meta-gradients of tabular softmax policies, batched over MDPs (float64).
//
// Per task (S states, A actions): pi = softmax(theta), M = (I - gamma P_pi)^{-1}, V = M r_pi,
// Q = R + gamma P V, d = M^T init, grad J = d pi (Q - V); the inner loop is
// theta_{k+1} = theta_k + alpha grad J(theta_k), and the meta-gradient dJ(theta_K)/dtheta_0 is the
// reverse pass v <- v + alpha H(theta_k) v (exact HVPs; formulas in engine/metakern/oracle.py).
//
// I - gamma P_pi is strictly row diagonally dominant for gamma < 1, so its LU factorisation needs
// no pivoting: every task runs the same instructions, and the kernel processes tasks in SIMD
// lanes (8 doubles per vector), structure-of-arrays, one group of 8 tasks per OpenMP work item
// (static ranges with stealing, common/work_claims.h; results do not depend on the thread count).
// Cost per task: (K+1) (S^3/3 + 2 S^2 A + 2 S^2) + K (2 S^2 A + 2 S^2) multiply-adds (44k at S=20,
// A=5, K=3) and (K+1) S A exponentials.
// Two implementations: a fixed-size AVX-512 kernel for the sizes it is instantiated for (S=20, A=5,
// the gradient-bias study's), with S and A compile-time constants so that rows of the factors and
// the solves' unknowns live in registers, one pass over a group's P (125 KiB, from L2) per
// evaluation (Q_k, the step to theta_{k+1}, pi_{k+1} and row by row the next LU, fused) and one per
// HVP; and a generic kernel for any other S, A or ISA (AVX-512, AVX2, SSE2). At B=1024, S=20, A=5,
// K=3 on 2 Zen 4 cores the fixed kernel takes ~1.8 ms (~27 us per group and thread), bound by
// issuing loads and multiply-adds (about one 512-bit load per multiply-add), not by memory: reading
// P once takes ~0.1 ms.
#pragma once
#include <cstdint>

namespace metakern {

// P [B, S, A, S], R [B, S, A], init [B, S], theta0 [B, S, A] (contiguous float64).
// Outputs: meta_grad [B, S, A], objective [B] (J(theta_K)), thetas [K+1, B, S, A] (theta_0..K; null: not written).
void oracle_maml_meta_gradient_cpu(const double* P, const double* R, const double* init,
                                   const double* theta0, int64_t B, int64_t S, int64_t A,
                                   double gamma, double alpha, int64_t K, double* meta_grad,
                                   double* objective, double* thetas, int num_threads);

}  // namespace metakern
