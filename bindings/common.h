// Helpers shared by the pybind11 modules. Python has already validated every argument (dtype,
// shape, contiguity, device); these checks only guard the C++ side against misuse of the raw API.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dtype.h"

namespace metakern {

inline DType to_dtype(int code) {
  if (code < 0 || code > 3) throw std::invalid_argument("metakern: unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

inline void check_sizes(int64_t B, int64_t T) {
  if (B <= 0 || T <= 0) {
    throw std::invalid_argument("metakern: sizes must be positive, got B=" + std::to_string(B) +
                                " T=" + std::to_string(T));
  }
}

inline void check_ptr(std::uintptr_t p, const char* name) {
  if (p == 0) throw std::invalid_argument(std::string("metakern: null pointer for ") + name);
}

template <typename T> inline T* as_ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

}  // namespace metakern
