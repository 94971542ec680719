#include "mujoco/mj_batch.h"

#include <dlfcn.h>
#include <link.h>
#include <omp.h>

#include <cstring>
#include <mutex>

namespace metakern::mj {
namespace {

using StepFn = void (*)(const void*, void*);

struct Api {
  StepFn step = nullptr;
  StepFn rne_post = nullptr;
  std::string library;
};

Api g_api;
std::mutex g_mutex;

int find_libmujoco(struct dl_phdr_info* info, size_t, void* out) {
  const char* name = info->dlpi_name;
  if (name && std::strstr(name, "libmujoco.so")) {
    *static_cast<std::string*>(out) = name;
    return 1;
  }
  return 0;
}

void gather_row(int64_t B, int64_t i, const GatherSpec& g) {
  for (int64_t f = 0; f < g.count; ++f) {
    const int64_t n = g.len[f];
    const auto* src = reinterpret_cast<const double*>(static_cast<uintptr_t>(g.src[f * B + i]));
    auto* dst = reinterpret_cast<double*>(static_cast<uintptr_t>(g.dst[f])) + i * n;
    std::memcpy(dst, src, sizeof(double) * static_cast<size_t>(n));
  }
}

int threads_for(int num_threads, int64_t B) {
  int nt = num_threads > 0 ? num_threads : omp_get_max_threads();
  if (nt > B) nt = static_cast<int>(B);
  return nt < 1 ? 1 : nt;
}

}  // namespace

std::string load_api() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_api.step) return "";
  std::string path;
  dl_iterate_phdr(find_libmujoco, &path);
  if (path.empty()) return "libmujoco is not loaded in this process (import mujoco first)";
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!handle) return "dlopen(" + path + ") failed: " + std::string(dlerror());
  auto step = reinterpret_cast<StepFn>(dlsym(handle, "mj_step"));
  auto rne = reinterpret_cast<StepFn>(dlsym(handle, "mj_rnePostConstraint"));
  if (!step || !rne) return path + " lacks mj_step / mj_rnePostConstraint";
  g_api.step = step;
  g_api.rne_post = rne;
  g_api.library = path;
  return "";
}

std::string api_library() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_api.library;
}

void batch_step(int64_t B, const int64_t* models, const int64_t* datas, const double* ctrl, int64_t nu,
                const int64_t* ctrl_dst, int frame_skip, bool post_constraint, const uint8_t* active,
                const GatherSpec& gather, int num_threads) {
  const StepFn step = g_api.step;
  const StepFn rne = g_api.rne_post;
  // dynamic scheduling: envs that hit contacts cost several times those in the air
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_for(num_threads, B))
  for (int64_t i = 0; i < B; ++i) {
    if (active && !active[i]) continue;
    const void* m = reinterpret_cast<const void*>(static_cast<uintptr_t>(models[i]));
    void* d = reinterpret_cast<void*>(static_cast<uintptr_t>(datas[i]));
    std::memcpy(reinterpret_cast<double*>(static_cast<uintptr_t>(ctrl_dst[i])), ctrl + i * nu,
                sizeof(double) * static_cast<size_t>(nu));
    for (int k = 0; k < frame_skip; ++k) step(m, d);
    if (post_constraint) rne(m, d);
    gather_row(B, i, gather);
  }
}

void batch_gather(int64_t B, const uint8_t* active, const GatherSpec& gather) {
  for (int64_t i = 0; i < B; ++i) {
    if (active && !active[i]) continue;
    gather_row(B, i, gather);
  }
}

}  // namespace metakern::mj
