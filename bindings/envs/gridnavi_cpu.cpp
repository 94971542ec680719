#include "env_bindings.h"
#include "env_registry.h"
#include "envs/gridnavi.h"

namespace {
using namespace metakern::envs;
const RegisterEnv reg("gridnavi", [](pybind11::module_& m) { bind_env_cpu<GridNavi>(m, "gridnavi"); });
}  // namespace
