// CPU kernels of the GRU gate step (math and cost: gru_gates.h). The row loops are compiled for
// AVX-512, AVX2+FMA and baseline x86-64 (picked on first use: common/cpu_features.h) with the vectorizable
// tanh of common/fast_math.h; OpenMP splits the rows from 32k elements on.
#include "policy/gru_gates.h"

#include <omp.h>

#include "common/cpu_features.h"
#include "common/fast_math.h"

namespace metakern {
namespace {

template <typename T>
inline __attribute__((always_inline)) void forward_rows(const T* gi, int64_t gi_stride, const T* gh, const T* hp,
                                                       T* gates, T* ghn, T* h, int64_t b0, int64_t b1, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const T* gi_b = gi + b * gi_stride;
    const T* gh_b = gh + b * 3 * H;
    const T* hp_b = hp + b * H;
    T* g_b = gates + b * 3 * H;
    T* ghn_b = ghn + b * H;
    T* h_b = h + b * H;
    // one pointer per [r | z | n] block: indexing a block as base[k * H + j] defeats the vectorizer
    const T *gi_r = gi_b, *gi_z = gi_b + H, *gi_n = gi_b + 2 * H;
    const T *gh_r = gh_b, *gh_z = gh_b + H, *gh_n = gh_b + 2 * H;
    T *g_r = g_b, *g_z = g_b + H, *g_n = g_b + 2 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T r = sigmoid_any(gi_r[j] + gh_r[j]);
      const T z = sigmoid_any(gi_z[j] + gh_z[j]);
      const T hn = gh_n[j];
      const T n = tanh_any(gi_n[j] + r * hn);
      g_r[j] = r;
      g_z[j] = z;
      g_n[j] = n;
      ghn_b[j] = hn;
      h_b[j] = n + z * (hp_b[j] - n);
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void backward_rows(const T* dh_carry, const T* d_out, int64_t d_out_stride,
                                                        const T* gates, const T* ghn, const T* hp, T* dgi, T* dgh,
                                                        T* dh_z, int64_t b0, int64_t b1, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    const T* dc_b = dh_carry + b * H;
    const T* do_b = d_out + b * d_out_stride;
    const T* g_b = gates + b * 3 * H;
    const T* ghn_b = ghn + b * H;
    const T* hp_b = hp + b * H;
    T* dgi_b = dgi + b * 3 * H;
    T* dgh_b = dgh + b * 3 * H;
    T* dz_b = dh_z + b * H;
    const T *g_r = g_b, *g_z = g_b + H, *g_n = g_b + 2 * H;
    T *dgi_r = dgi_b, *dgi_z = dgi_b + H, *dgi_n = dgi_b + 2 * H;
    T *dgh_r = dgh_b, *dgh_z = dgh_b + H, *dgh_n = dgh_b + 2 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const T r = g_r[j], z = g_z[j], n = g_n[j];
      const T dh = dc_b[j] + do_b[j];
      const T d_pre_n = dh * (T(1) - z) * (T(1) - n * n);
      const T d_pre_r = d_pre_n * ghn_b[j] * r * (T(1) - r);
      const T d_pre_z = dh * (hp_b[j] - n) * z * (T(1) - z);
      dgi_r[j] = d_pre_r;
      dgi_z[j] = d_pre_z;
      dgi_n[j] = d_pre_n;
      dgh_r[j] = d_pre_r;
      dgh_z[j] = d_pre_z;
      dgh_n[j] = d_pre_n * r;
      dz_b[j] = dh * z;
    }
  }
}

#define MK_GRU_ROW_VARIANT(R, SUFFIX, ATTR)                                                                         \
  ATTR void forward_##SUFFIX(const R* gi, int64_t gi_stride, const R* gh, const R* hp, R* gates, R* ghn, R* h,       \
                             int64_t b0, int64_t b1, int64_t H) {                                                    \
    forward_rows<R>(gi, gi_stride, gh, hp, gates, ghn, h, b0, b1, H);                                                \
  }                                                                                                                  \
  ATTR void backward_##SUFFIX(const R* dc, const R* d_out, int64_t d_out_stride, const R* gates, const R* ghn,       \
                              const R* hp, R* dgi, R* dgh, R* dh_z, int64_t b0, int64_t b1, int64_t H) {             \
    backward_rows<R>(dc, d_out, d_out_stride, gates, ghn, hp, dgi, dgh, dh_z, b0, b1, H);                            \
  }
#define MK_GRU_ROW_FUNCTIONS(R, SUFFIX)                                                                              \
  MK_GRU_ROW_VARIANT(R, SUFFIX##_v4, METAKERN_ISA_V4)                                                                \
  MK_GRU_ROW_VARIANT(R, SUFFIX##_v3, METAKERN_ISA_V3)                                                                \
  MK_GRU_ROW_VARIANT(R, SUFFIX##_v1, METAKERN_ISA_V1)                                                                \
  void forward_##SUFFIX(const R* gi, int64_t gi_stride, const R* gh, const R* hp, R* gates, R* ghn, R* h, int64_t b0, \
                        int64_t b1, int64_t H) {                                                                     \
    static const auto fn = METAKERN_ISA_PICK(forward_##SUFFIX);                                                      \
    fn(gi, gi_stride, gh, hp, gates, ghn, h, b0, b1, H);                                                             \
  }                                                                                                                  \
  void backward_##SUFFIX(const R* dc, const R* d_out, int64_t d_out_stride, const R* gates, const R* ghn,            \
                         const R* hp, R* dgi, R* dgh, R* dh_z, int64_t b0, int64_t b1, int64_t H) {                  \
    static const auto fn = METAKERN_ISA_PICK(backward_##SUFFIX);                                                     \
    fn(dc, d_out, d_out_stride, gates, ghn, hp, dgi, dgh, dh_z, b0, b1, H);                                          \
  }
MK_GRU_ROW_FUNCTIONS(float, f32)
MK_GRU_ROW_FUNCTIONS(double, f64)

template <typename F>
void over_rows(int64_t B, int64_t H, F&& rows) {
  if (B * H < 32768 || omp_get_max_threads() == 1) {
    rows(int64_t{0}, B);
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), it = omp_get_thread_num();
    const int64_t b0 = B * it / nt, b1 = B * (it + 1) / nt;
    if (b0 < b1) rows(b0, b1);
  }
}

}  // namespace

void gru_gates_forward_cpu(int dtype, const void* gi, int64_t gi_stride, const void* gh, const void* hp, void* gates,
                           void* ghn, void* h, int64_t B, int64_t H) {
  over_rows(B, H, [&](int64_t b0, int64_t b1) {
    if (dtype == 1) {
      forward_f64(static_cast<const double*>(gi), gi_stride, static_cast<const double*>(gh),
                  static_cast<const double*>(hp), static_cast<double*>(gates), static_cast<double*>(ghn),
                  static_cast<double*>(h), b0, b1, H);
    } else {
      forward_f32(static_cast<const float*>(gi), gi_stride, static_cast<const float*>(gh),
                  static_cast<const float*>(hp), static_cast<float*>(gates), static_cast<float*>(ghn),
                  static_cast<float*>(h), b0, b1, H);
    }
  });
}

void gru_gates_backward_cpu(int dtype, const void* dh_carry, const void* d_out, int64_t d_out_stride,
                            const void* gates, const void* ghn, const void* hp, void* dgi, void* dgh, void* dh_z,
                            int64_t B, int64_t H) {
  over_rows(B, H, [&](int64_t b0, int64_t b1) {
    if (dtype == 1) {
      backward_f64(static_cast<const double*>(dh_carry), static_cast<const double*>(d_out), d_out_stride,
                   static_cast<const double*>(gates), static_cast<const double*>(ghn), static_cast<const double*>(hp),
                   static_cast<double*>(dgi), static_cast<double*>(dgh), static_cast<double*>(dh_z), b0, b1, H);
    } else {
      backward_f32(static_cast<const float*>(dh_carry), static_cast<const float*>(d_out), d_out_stride,
                   static_cast<const float*>(gates), static_cast<const float*>(ghn), static_cast<const float*>(hp),
                   static_cast<float*>(dgi), static_cast<float*>(dgh), static_cast<float*>(dh_z), b0, b1, H);
    }
  });
}

}  // namespace metakern
