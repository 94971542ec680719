#include "env_bindings_cuda.h"
#include "env_registry.h"
#include "envs/maze.h"

namespace {
using namespace metakern::envs;
const RegisterEnv reg("maze", [](pybind11::module_& m) { bind_env_cuda<Maze>(m, "maze"); });
}  // namespace
