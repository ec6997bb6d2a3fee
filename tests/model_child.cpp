// Child process of the streaming test: quantizes the Hugging Face directory argv[1] and writes
// the result's hash to argv[2]; the parent reads this process's peak RSS from wait4.
#include <cstdio>
#include <exception>

#include "model_run.hpp"

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: awq_model_child HF_DIR OUT\n");
    return 2;
  }
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
