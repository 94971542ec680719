#include "env_bindings_cuda.h"
#include "env_registry.h"
#include "envs/harlow.h"

namespace {
using namespace metakern::envs;
const RegisterEnv reg("harlow", [](pybind11::module_& m) { bind_env_cuda<Harlow>(m, "harlow"); });
}  // namespace
