// Runtime ISA checks shared by the CPU kernels that carry an AVX-512 path next to a portable one.
#pragma once
#include <cstdlib>

namespace metakern {

// Decided on first use, not at load time (a static initialiser could run before libgcc's CPU probe).
// METAKERN_DISABLE_AVX512=1 forces the portable paths (how the tests reach them on AVX-512 machines).
inline bool have_avx512() {
  static const bool yes = [] {
    const char* off = std::getenv("METAKERN_DISABLE_AVX512");
    if (off != nullptr && off[0] != '\0' && off[0] != '0') return false;
    __builtin_cpu_init();
    return static_cast<bool>(__builtin_cpu_supports("avx512f")) && static_cast<bool>(__builtin_cpu_supports("avx512vl"));
  }();
  return yes;
}

}  // namespace metakern
