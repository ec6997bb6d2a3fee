// Child process of the streaming test: quantizes the Hugging Face directory argv[1] and writes
// the result's hash to argv[2]; the parent reads this process's peak RSS from wait4.
#include <cstdio>
#include <exception>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "model_run.hpp"

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: awq_model_child HF_DIR OUT\n");
    return 2;
  }
#if defined(__GLIBC__)
  // The driver reads the next block on a thread of its own (PipelineOptions::overlap_io): with
  // glibc's per-thread arenas, what that thread allocates and the caller frees stays cached in
  // its arena, and RSS reports the allocator's cache (≈ 2x the model here) instead of the live
  // data (two blocks). One arena measures the driver, not the allocator.
  mallopt(M_ARENA_MAX, 1);
#endif
  const unsigned long long hash = awq_test::quantize_hf_dir(argv[1]);
  std::FILE* f = std::fopen(argv[2], "w");
  if (!f || std::fprintf(f, "%llu\n", hash) < 0 || std::fclose(f) != 0) {
    std::fprintf(stderr, "awq_model_child: cannot write %s\n", argv[2]);
    return 2;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "awq_model_child: %s\n", e.what());
  return 2;
}
