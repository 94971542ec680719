#include "envs/env_driver_cuda.cuh"
#include "envs/harlow.h"

namespace metakern {
namespace envs {
METAKERN_INSTANTIATE_ENV_CUDA(Harlow)
}  // namespace envs
}  // namespace metakern
