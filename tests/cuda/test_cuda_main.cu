// doctest main for the CUDA tests: without a device, says so, skips the device cases and runs only
// the host-only ones (test cases named "host-only: …", e.g. the kernels' launch plans).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "awq/backend/cuda_runtime.cuh"

int main(int argc, char** argv) {
  doctest::Context ctx(argc, argv);
  if (awq::cuda::device_count() == 0) {
    std::printf("awq CUDA tests: no CUDA device, the device cases are skipped; running the host-only cases\n");
    ctx.setOption("test-case", "host-only*");
  }
  return ctx.run();
}
