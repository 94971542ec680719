#include "envs/env_driver_cuda.cuh"
#include "envs/gridnavi.h"

namespace metakern {
namespace envs {
METAKERN_INSTANTIATE_ENV_CUDA(GridNavi)
}  // namespace envs
}  // namespace metakern
