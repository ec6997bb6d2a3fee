// awq_tests' entry point: doctest's runner, or with `--model-child DIR OUT` the streaming test's
// measured child process. The child is this binary rather than a program of its own, so the
// driver it runs is compiled once (in test_model.cpp) and not again for a second executable.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

namespace awq_test {
int model_child_main(const char* dir, const char* out);  // test_model.cpp
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--model-child") == 0) {
    if (argc != 4) {
      std::fprintf(stderr, "usage: awq_tests --model-child HF_DIR OUT\n");
      return 2;
    }
    return awq_test::model_child_main(argv[2], argv[3]);
  }
  return doctest::Context(argc, argv).run();
}
