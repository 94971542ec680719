// Linear recurrence scan over the time axis of row-major [B, T] arrays.
//
//   forward:  y[b, t] = a[b, t] * y[b, t-1] + x[b, t],   y[b, -1] = carry[b]
//   reverse:  y[b, t] = a[b, t] * y[b, t+1] + x[b, t],   y[b,  T] = carry[b]
//
// The carry is held in the accumulator type (float for 16-bit storage, else the storage type).
// Memory traffic: reads x, a (2*B*T elements) and carry (B), writes y (B*T): the floor for any
// implementation. FLOPs: 2*B*T. All pointers are contiguous; x/a/y are [B, T], carry is [B].
#pragma once
#include <cstdint>

#include "common/dtype.h"

namespace metakern {

// Time-major layout ([T, B] arrays, time_major = true): y[t, b] = a[t, b] * y[t -/+ 1, b] + x[t, b].
// Every step is then a contiguous row of B independent recurrences: one multiply-add per element,
// vectorised across b, which is how RL rollout buffers ([num_steps, num_envs]) are laid out.
//
// CPU (OpenMP over rows, SIMD along time). num_threads <= 0 means "OpenMP's default".
void linear_scan_cpu(DType dtype, const void* x, const void* a, const void* carry, void* y,
                     int64_t B, int64_t T, bool reverse, bool time_major, int num_threads);

// Backward of linear_scan_cpu (float32/float64), without materialising shifted copies.
// For the forward scan (reverse = false):  g_t = gy_t + a_{t+1} g_{t+1},  da_t = g_t y_{t-1} (y_{-1} = carry)
// For the reverse scan (reverse = true):   g_t = gy_t + a_{t-1} g_{t-1},  da_t = g_t y_{t+1} (y_T = carry)
// g is the gradient w.r.t. x (and, through g at the first step, w.r.t. carry); da is skipped when
// null. The adjoint is itself a scan of length T-1 (over gy with a shifted by one step), so it
// reuses the forward kernels; da is one extra multiply per element on data already in cache.
void linear_scan_backward_cpu(DType dtype, const void* gy, const void* a, const void* y,
                              const void* carry, void* g, void* da, int64_t B, int64_t T,
                              bool reverse, bool time_major, int num_threads);

// Generalised advantage estimation in one pass (float32/float64), [B, T] or time-major [T, B]:
//   delta_t = r_t + gamma * (cont_t * V_{t+1} + cut_t) - V_t,   V_T = bootstrap
//   adv_t   = delta_t + gamma * lam * cont_t * adv_{t+1},       adv_T = 0
//   ret_t   = adv_t + V_t
// cont (1 where the return flows from t+1 into t), cut (value added at truncations) and bootstrap
// ([B]) may be null, meaning 1, 0 and 0. Reads r, V (and the optional inputs) once, writes adv
// and ret once: the memory floor of the computation.
void gae_cpu(DType dtype, const void* r, const void* v, const void* cont, const void* cut,
             const void* bootstrap, void* adv, void* ret, int64_t B, int64_t T, double gamma,
             double lam, bool time_major, int num_threads);

// CUDA: launched on `stream` (a cudaStream_t passed as an integer) of the current device.
// Returns an empty string on success, else the CUDA error text.
const char* linear_scan_cuda(DType dtype, const void* x, const void* a, const void* carry,
                             void* y, int64_t B, int64_t T, bool reverse, bool time_major,
                             void* stream);

}  // namespace metakern
