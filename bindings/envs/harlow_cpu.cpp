#include "env_bindings.h"
#include "env_registry.h"
#include "envs/harlow.h"

namespace {
using namespace metakern::envs;
const RegisterEnv reg("harlow", [](pybind11::module_& m) { bind_env_cpu<Harlow>(m, "harlow"); });
}  // namespace
