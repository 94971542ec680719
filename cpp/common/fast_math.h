// Vectorizable transcendental functions for the CPU kernels (loops calling them compile to SIMD;
// libm's tanh / exp would keep them scalar). GCC if-converts their selects only under
// -fno-trapping-math (set per source file in CMakeLists.txt); otherwise a loop over them stays scalar.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace metakern {

// tanh for float, written so that loops over it vectorize: an odd Taylor polynomial (to x^11) below
// |x| = 0.25, 1 - 2 / (exp(2|x|) + 1) above, with exp from a Cody-Waite reduction and a degree-7
// polynomial. Error: a few float ulps (tests compare against float64). Double uses std::tanh.
inline __attribute__((always_inline)) float tanh_fast(float x) {
  // tanh(9) rounds to 1 in float. A select, not std::fmin (same value, NaN included: 9), which GCC
  // leaves a call that blocks vectorization
  const float ax = std::fabs(x);
  const float a = ax < 9.0f ? ax : 9.0f;
  const float a2 = a * a;
  const float poly =
      a * (1.0f + a2 * (-1.0f / 3 + a2 * (2.0f / 15 + a2 * (-17.0f / 315 + a2 * (62.0f / 2835 + a2 * (-1382.0f / 155925))))));
  const float t = 2.0f * a * 1.44269504088896341f;  // 2a log2(e), in [0, 26]
  const float magic = 12582912.0f;                  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = t + magic;
  const float n = shifted - magic;
  int32_t ni;
  std::memcpy(&ni, &shifted, sizeof ni);
  ni -= 0x4B400000;  // the bits of magic
  const float r = (2.0f * a - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  const float er =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  int32_t eb;
  std::memcpy(&eb, &er, sizeof eb);
  eb += ni << 23;
  float e;
  std::memcpy(&e, &eb, sizeof e);
  const float big = 1.0f - 2.0f / (e + 1.0f);
  const float y = a < 0.25f ? poly : big;
  return x < 0.0f ? -y : y;
}

// tanh in float (tanh_fast) or double (std::tanh), and sigmoid(x) = (1 + tanh(x / 2)) / 2.
template <typename R>
inline __attribute__((always_inline)) R tanh_any(R x) {
  if constexpr (sizeof(R) == 4) {
    return tanh_fast(x);
  } else {
    return std::tanh(x);
  }
}

template <typename R>
inline __attribute__((always_inline)) R sigmoid_any(R x) {
  return R(0.5) + R(0.5) * tanh_any(R(0.5) * x);
}

}  // namespace metakern
