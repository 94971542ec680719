#include "env_bindings_cuda.h"
#include "env_registry.h"
#include "envs/gridnavi.h"

namespace {
using namespace metakern::envs;
const RegisterEnv reg("gridnavi", [](pybind11::module_& m) { bind_env_cuda<GridNavi>(m, "gridnavi"); });
}  // namespace
