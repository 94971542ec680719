// Self-registration of environment families into the pybind11 modules: each file
// bindings/envs/<family>_cpu.cpp (or _cuda.cpp) holds one `static RegisterEnv` object, and the
// module's init function calls every registered binder. Adding a family touches no shared file.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace metakern {
namespace envs {

using EnvBinder = void (*)(pybind11::module_&);

inline std::vector<std::pair<std::string, EnvBinder>>& env_binders() {
  static std::vector<std::pair<std::string, EnvBinder>> binders;
  return binders;
}

struct RegisterEnv {
  RegisterEnv(const char* name, EnvBinder binder) { env_binders().emplace_back(name, binder); }
};

// Bind every registered family; also exposes the list as `env_families` (sorted names).
inline void bind_registered_envs(pybind11::module_& m) {
  std::vector<std::string> names;
  for (auto& entry : env_binders()) {
    entry.second(m);
    names.push_back(entry.first);
  }
  std::sort(names.begin(), names.end());
  m.attr("env_families") = names;
}

}  // namespace envs
}  // namespace metakern
