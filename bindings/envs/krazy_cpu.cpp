#include "env_bindings.h"
#include "env_registry.h"
#include "envs/krazy.h"

namespace {
using namespace metakern::envs;
const RegisterEnv reg("krazy", [](pybind11::module_& m) { bind_env_cpu<Krazy>(m, "krazy"); });
}  // namespace
