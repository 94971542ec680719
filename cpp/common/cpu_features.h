// Runtime ISA choice shared by the CPU kernels that carry AVX-512 / AVX2 paths next to a portable one.
#pragma once
#include <cstdlib>
#include <cstring>

namespace metakern {

// The instruction-set levels the kernels are built for: x86-64 baseline (SSE2), x86-64-v3 (AVX2, FMA,
// BMI1/2, F16C, LZCNT, MOVBE) and x86-64-v4 (AVX-512 F/BW/CD/DQ/VL on top).
enum IsaLevel : int { kIsaBaseline = 0, kIsaAvx2 = 1, kIsaAvx512 = 2 };

inline const char* isa_name(int level) {
  return level >= kIsaAvx512 ? "avx512" : level >= kIsaAvx2 ? "avx2" : "sse2";
}

// What the CPU supports, capped by the environment: METAKERN_MAX_ISA=sse2|avx2|avx512 (the tests run
// every kernel at each level this way), and METAKERN_DISABLE_AVX512=1, the same as
// METAKERN_MAX_ISA=avx2. Decided on first use, not at load time (a static initialiser could run before
// libgcc's CPU probe), and fixed for the life of the process. An unknown METAKERN_MAX_ISA value is ignored.
inline int isa_level() {
  static const int level = [] {
    __builtin_cpu_init();
    int cpu = kIsaBaseline;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
        __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("lzcnt") &&
        __builtin_cpu_supports("movbe")) {
      cpu = kIsaAvx2;
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
          __builtin_cpu_supports("avx512vl")) {
        cpu = kIsaAvx512;
      }
    }
    int cap = kIsaAvx512;
    if (const char* v = std::getenv("METAKERN_MAX_ISA")) {
      if (std::strcmp(v, "sse2") == 0) cap = kIsaBaseline;
      if (std::strcmp(v, "avx2") == 0) cap = kIsaAvx2;
    }
    const char* off = std::getenv("METAKERN_DISABLE_AVX512");
    if (off != nullptr && off[0] != '\0' && off[0] != '0' && cap > kIsaAvx2) cap = kIsaAvx2;
    return cpu < cap ? cpu : cap;
  }();
  return level;
}

inline bool have_avx512() { return isa_level() >= kIsaAvx512; }
inline bool have_avx2() { return isa_level() >= kIsaAvx2; }

// Kernels written as plain loops for the compiler to vectorize are compiled three times, as FN_v4,
// FN_v3 and FN_v1 with these attributes (flatten: what they call is inlined and compiled with them),
// and called through METAKERN_ISA_PICK(FN), the variant of isa_level().
#define METAKERN_ISA_V4 __attribute__((target("arch=x86-64-v4"), flatten))
#define METAKERN_ISA_V3 __attribute__((target("arch=x86-64-v3"), flatten))
#define METAKERN_ISA_V1 __attribute__((flatten))
#define METAKERN_ISA_PICK(FN) (::metakern::have_avx512() ? FN##_v4 : ::metakern::have_avx2() ? FN##_v3 : FN##_v1)

}  // namespace metakern
