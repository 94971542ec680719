#include "envs/env_driver_cuda.cuh"
#include "envs/maze.h"

namespace metakern {
namespace envs {
METAKERN_INSTANTIATE_ENV_CUDA(Maze)
}  // namespace envs
}  // namespace metakern
