// Child process of the streaming test: quantizes the Hugging Face directory argv[1] and writes
// the result's hash and this process's peak RSS in kB (VmHWM, 0 where /proc is absent) to argv[2].
// Its own reading, not wait4's: a child spawned through vfork is charged the parent's RSS at exec.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "model_run.hpp"

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: awq_model_child HF_DIR OUT\n");
    return 2;
  }
  const unsigned long long hash = awq_test::quantize_hf_dir(argv[1]);
  unsigned long long hwm_kb = 0;
  if (std::FILE* st = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, st))
      if (std::strncmp(line, "VmHWM:", 6) == 0) hwm_kb = std::strtoull(line + 6, nullptr, 10);
    std::fclose(st);
  }
  std::FILE* f = std::fopen(argv[2], "w");
  if (!f || std::fprintf(f, "%llu %llu\n", hash, hwm_kb) < 0 || std::fclose(f) != 0) {
    std::fprintf(stderr, "awq_model_child: cannot write %s\n", argv[2]);
    return 2;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "awq_model_child: %s\n", e.what());
  return 2;
}
