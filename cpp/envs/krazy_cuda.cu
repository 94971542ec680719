#include "envs/env_driver_cuda.cuh"
#include "envs/krazy.h"

namespace metakern {
namespace envs {
METAKERN_INSTANTIATE_ENV_CUDA(Krazy)
}  // namespace envs
}  // namespace metakern
