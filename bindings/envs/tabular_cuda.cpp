#include "env_bindings_cuda.h"
#include "env_registry.h"
#include "envs/tabular.h"

namespace {
using namespace metakern::envs;
const RegisterEnv reg("tabular", [](pybind11::module_& m) { bind_env_cuda<TabularMDP>(m, "tabular"); });
}  // namespace
