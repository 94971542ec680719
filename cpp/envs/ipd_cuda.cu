#include "envs/env_driver_cuda.cuh"
#include "envs/ipd.h"

namespace metakern {
namespace envs {
METAKERN_INSTANTIATE_ENV_CUDA(IteratedPD)
}  // namespace envs
}  // namespace metakern
