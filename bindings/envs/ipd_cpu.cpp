#include "env_bindings.h"
#include "env_registry.h"
#include "envs/ipd.h"

namespace {
using namespace metakern::envs;
const RegisterEnv reg("ipd", [](pybind11::module_& m) { bind_env_cpu<IteratedPD>(m, "ipd"); });
}  // namespace
