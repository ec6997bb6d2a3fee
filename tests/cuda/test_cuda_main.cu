// doctest main for the CUDA tests: without a device, says so and reports a skip.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "awq/backend/cuda_runtime.cuh"

int main(int argc, char** argv) {
  if (awq::cuda::device_count() == 0) {
    std::printf("awq CUDA tests skipped: no CUDA device\n");
    return 0;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
