// Batched MuJoCo stepping across threads (metakern.envs.mujoco).
//
// metakern does not compile or link against MuJoCo: it calls the libmujoco that the `mujoco`
// Python package has already loaded into the process, resolving mj_step, mj_rnePostConstraint
// and mj_forward by name (dl_iterate_phdr finds the loaded library, dlsym its symbols). The
// mjModel / mjData pointers come from the Python objects (`MjModel._address`), and every field
// the loop reads or writes is passed as a raw address per environment (numpy views into each
// MjData, fixed for its lifetime), so no MuJoCo header or struct layout is needed here and any
// MuJoCo version the Python package brings works.
#pragma once

#include <cstdint>
#include <string>

namespace metakern::mj {

// Resolve the MuJoCo entry points from the loaded libmujoco; returns "" on success, else why not.
std::string load_api();
// Path of the libmujoco the entry points were taken from ("" before load_api succeeds).
std::string api_library();

struct GatherSpec {
  int64_t count;            // number of fields gathered
  const int64_t* src;       // [count, B] source addresses (double*) per field and env
  const int64_t* len;       // [count] doubles per env
  const int64_t* dst;       // [count] destination base addresses of [B, len] double arrays
};

// For every env i with active[i] != 0 (active may be null: all): copy ctrl[i] (nu doubles) into
// the env's ctrl buffer, call mj_step frame_skip times, then mj_rnePostConstraint if post_constraint
// (as gymnasium's MujocoEnv does), then copy the gathered fields into row i of their outputs.
// Environments run in parallel on num_threads OpenMP threads (0: all).
void batch_step(int64_t B, const int64_t* models, const int64_t* datas, const double* ctrl, int64_t nu,
                const int64_t* ctrl_dst, int frame_skip, bool post_constraint, const uint8_t* active,
                const GatherSpec& gather, int num_threads);

// Copy the gathered fields of envs with active[i] != 0 (null: all) without stepping.
void batch_gather(int64_t B, const uint8_t* active, const GatherSpec& gather);

}  // namespace metakern::mj
