#include "envs/env_driver_cuda.cuh"
#include "envs/tabular.h"

namespace metakern {
namespace envs {
METAKERN_INSTANTIATE_ENV_CUDA(TabularMDP)
}  // namespace envs
}  // namespace metakern
