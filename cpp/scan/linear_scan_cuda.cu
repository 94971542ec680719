// CUDA linear scan. [B, T]: one thread block per row (rows on grid axis x, so B up to 2^31-1
// works). [T, B] (time-major): one thread per column, see linear_scan_time_major_kernel.
//
// A row is processed in tiles of blockDim.x * K elements. Each thread owns K consecutive steps and
// first composes them into one affine map h -> A*h + X (the scan operator is associative:
// (A1, X1) then (A2, X2) = (A1*A2, A2*X1 + X2)). A warp-shuffle scan and a scan over the warps'
// totals give every thread the map of all steps before its own; applied to the tile's incoming
// carry this yields the thread's starting value, from which it replays its K steps and stores y.
// The tile's total map advances the carry to the next tile. Traffic: x and a read once, y written
// once (the memory floor); the extra arithmetic is ~(2K + 3*log2(32) + warps) FMAs per K elements.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "scan/linear_scan.h"

namespace metakern {
namespace {

constexpr int kPerThread = 4;
constexpr int kMaxWarps = 8;
constexpr unsigned kFull = 0xffffffffu;

template <typename S> struct CudaStorage;
template <> struct CudaStorage<float> {
  using acc = float;
  __device__ static acc load(const float* p) { return *p; }
  __device__ static void store(float* p, acc v) { *p = v; }
};
template <> struct CudaStorage<double> {
  using acc = double;
  __device__ static acc load(const double* p) { return *p; }
  __device__ static void store(double* p, acc v) { *p = v; }
};
template <> struct CudaStorage<__nv_bfloat16> {
  using acc = float;
  __device__ static acc load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
  __device__ static void store(__nv_bfloat16* p, acc v) { *p = __float2bfloat16_rn(v); }
};
template <> struct CudaStorage<__half> {
  using acc = float;
  __device__ static acc load(const __half* p) { return __half2float(*p); }
  __device__ static void store(__half* p, acc v) { *p = __float2half_rn(v); }
};

// (A1, X1) followed by (A2, X2).
template <typename Acc>
__device__ __forceinline__ void compose(Acc A1, Acc X1, Acc& A2, Acc& X2) {
  X2 = A2 * X1 + X2;
  A2 = A1 * A2;
}

template <typename S>
__global__ void linear_scan_kernel(const S* __restrict__ x, const S* __restrict__ a,
                                   const S* __restrict__ carry, S* __restrict__ y, int64_t T,
                                   bool reverse) {
  using St = CudaStorage<S>;
  using Acc = typename St::acc;
  __shared__ Acc warp_A[kMaxWarps];
  __shared__ Acc warp_X[kMaxWarps];

  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  const S* xr = x + row * T;
  const S* ar = a + row * T;
  S* yr = y + row * T;
  Acc h = St::load(carry + row);

  const int64_t tile = static_cast<int64_t>(blockDim.x) * kPerThread;
  for (int64_t start = 0; start < T; start += tile) {
    const int64_t s0 = start + static_cast<int64_t>(threadIdx.x) * kPerThread;  // step index
    Acc av[kPerThread], xv[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int64_t s = s0 + k;
      if (s < T) {
        const int64_t t = reverse ? T - 1 - s : s;
        av[k] = St::load(ar + t);
        xv[k] = St::load(xr + t);
      } else {  // identity map: leaves the carry unchanged
        av[k] = Acc(1);
        xv[k] = Acc(0);
      }
    }
    // Compose this thread's K steps.
    Acc A = av[0], X = xv[0];
#pragma unroll
    for (int k = 1; k < kPerThread; ++k) {
      X = av[k] * X + xv[k];
      A = av[k] * A;
    }
    // Inclusive scan within the warp.
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const Acc Ap = __shfl_up_sync(kFull, A, off);
      const Acc Xp = __shfl_up_sync(kFull, X, off);
      if (lane >= off) compose(Ap, Xp, A, X);
    }
    if (lane == 31) {
      warp_A[warp] = A;
      warp_X[warp] = X;
    }
    // Exclusive prefix within the warp.
    Acc Ae = __shfl_up_sync(kFull, A, 1);
    Acc Xe = __shfl_up_sync(kFull, X, 1);
    if (lane == 0) {
      Ae = Acc(1);
      Xe = Acc(0);
    }
    __syncthreads();
    // Maps of the warps before this one, then of the whole tile.
    Acc Aw = Acc(1), Xw = Acc(0);
    Acc At = Acc(1), Xt = Acc(0);
    for (int w = 0; w < nwarps; ++w) {
      Acc Ai = warp_A[w], Xi = warp_X[w];
      if (w < warp) {
        Acc Ac = Ai, Xc = Xi;
        compose(Aw, Xw, Ac, Xc);
        Aw = Ac;
        Xw = Xc;
      }
      compose(At, Xt, Ai, Xi);
      At = Ai;
      Xt = Xi;
    }
    __syncthreads();  // warp_A/X are rewritten by the next tile
    compose(Aw, Xw, Ae, Xe);  // everything before this thread
    Acc v = Ae * h + Xe;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int64_t s = s0 + k;
      v = av[k] * v + xv[k];
      if (s < T) St::store(yr + (reverse ? T - 1 - s : s), v);
    }
    h = At * h + Xt;
  }
}

// Time-major [T, B]: one thread per column b; consecutive threads read consecutive addresses, so
// every step is one coalesced row access. Loads do not depend on the carry, so unrolling lets
// several steps' loads be in flight while the multiply-add chain advances.
template <typename S>
__global__ void linear_scan_time_major_kernel(const S* __restrict__ x, const S* __restrict__ a,
                                              const S* __restrict__ carry, S* __restrict__ y,
                                              int64_t B, int64_t T, bool reverse) {
  using St = CudaStorage<S>;
  using Acc = typename St::acc;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  Acc h = St::load(carry + b);
#pragma unroll 8
  for (int64_t s = 0; s < T; ++s) {
    const int64_t i = (reverse ? T - 1 - s : s) * B + b;
    h = St::load(a + i) * h + St::load(x + i);
    St::store(y + i, h);
  }
}

constexpr int kTimeMajorThreads = 256;

int threads_for(int64_t T) {
  const int64_t per = (T + kPerThread - 1) / kPerThread;
  int threads = 32;
  while (threads < kMaxWarps * 32 && threads < per) threads <<= 1;
  return threads;
}

template <typename S>
cudaError_t launch(const void* x, const void* a, const void* c, void* y, int64_t B, int64_t T,
                   bool reverse, bool time_major, cudaStream_t stream) {
  if (time_major) {
    const dim3 grid(static_cast<unsigned>((B + kTimeMajorThreads - 1) / kTimeMajorThreads));
    linear_scan_time_major_kernel<S><<<grid, kTimeMajorThreads, 0, stream>>>(
        static_cast<const S*>(x), static_cast<const S*>(a), static_cast<const S*>(c),
        static_cast<S*>(y), B, T, reverse);
  } else {
    const dim3 grid(static_cast<unsigned>(B));
    const dim3 block(threads_for(T));
    linear_scan_kernel<S><<<grid, block, 0, stream>>>(
        static_cast<const S*>(x), static_cast<const S*>(a), static_cast<const S*>(c),
        static_cast<S*>(y), T, reverse);
  }
  return cudaGetLastError();
}

}  // namespace

const char* linear_scan_cuda(DType dtype, const void* x, const void* a, const void* carry,
                             void* y, int64_t B, int64_t T, bool reverse, bool time_major,
                             void* stream) {
  if (B > 2147483647LL) return "linear_scan_cuda: B exceeds the grid limit 2^31-1";
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool tm = time_major;
  cudaError_t err = cudaSuccess;
  switch (dtype) {
    case DType::Float32: err = launch<float>(x, a, carry, y, B, T, reverse, tm, s); break;
    case DType::Float64: err = launch<double>(x, a, carry, y, B, T, reverse, tm, s); break;
    case DType::BFloat16: err = launch<__nv_bfloat16>(x, a, carry, y, B, T, reverse, tm, s); break;
    case DType::Float16: err = launch<__half>(x, a, carry, y, B, T, reverse, tm, s); break;
  }
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

}  // namespace metakern
