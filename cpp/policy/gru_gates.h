// The element-wise part of one GRU time step for B rows (metakern.algos.recurrent's GRU window pass),
// float32 / float64, header-only. The matrix products (gh = hp W_hh^T + b_hh forward, dh W_hh
// backward) stay in BLAS; these kernels fuse the ~10 element-wise tensor ops around them into one
// pass over the rows.
//
// forward, per row (gi: input projection with b_ih, gh: recurrent projection with b_hh, both
// [r | z | n] blocks of H; hp: the previous hidden state after the reset mask):
//   r = sigmoid(gi_r + gh_r),  z = sigmoid(gi_z + gh_z),  n = tanh(gi_n + r * gh_n),  h = n + z (hp - n)
//   writes gates = [r | z | n] (3H), ghn = gh_n (H), h (H).
// backward, per row, with dh = dh_carry + d_out (the gradient reaching h from the next step and
// from this step's output):
//   d_pre_n = dh (1 - z)(1 - n^2),  d_pre_r = d_pre_n gh_n r (1 - r),  d_pre_z = dh (hp - n) z (1 - z)
//   writes dgi = [d_pre_r | d_pre_z | d_pre_n] (gradient of gi), dgh = [d_pre_r | d_pre_z | d_pre_n r]
//   (gradient of gh) and dh_z = dh z (the direct part of the gradient of hp; the caller adds
//   dgh W_hh and applies the reset mask).
// Cost: O(B H) reads and writes, ~20 flops per element; OpenMP over rows from 32k elements on.
// float32 uses the vectorizable tanh_fast (common/fast_math.h; a few ulps), float64 std::tanh.
#pragma once
#include <cstdint>

namespace metakern {

// dtype: 0 = float32, 1 = float64. Pointers to [B, 3H] / [B, H] row-major blocks; gi rows are
// gi_stride elements apart, d_out rows d_out_stride apart.
void gru_gates_forward_cpu(int dtype, const void* gi, int64_t gi_stride, const void* gh, const void* hp, void* gates,
                           void* ghn, void* h, int64_t B, int64_t H);
void gru_gates_backward_cpu(int dtype, const void* dh_carry, const void* d_out, int64_t d_out_stride,
                            const void* gates, const void* ghn, const void* hp, void* dgi, void* dgh, void* dh_z,
                            int64_t B, int64_t H);

}  // namespace metakern
