// Checks shared by the launch-plan tests of the W4A16 tensor-core kernels (awq_tests and the CUDA tests).
#pragma once

#include <doctest/doctest.h>

#include <algorithm>

#include "awq/kernels/cuda/gemm_plan.hpp"

namespace awq_test {

/// The slices a plan's blocks take (the kernels' step0 / nsteps arithmetic): every step once, none empty.
inline void check_slices(const awq::cuda::detail::GemmPlan& p) {
  REQUIRE(p.splits >= 1);
  REQUIRE(p.steps_per_split >= 1);
  int covered = 0;
  for (int z = 0; z < p.splits; ++z) {
    const int step0 = z * p.steps_per_split, nsteps = std::min(p.steps, step0 + p.steps_per_split) - step0;
    CHECK(nsteps > 0);
    CHECK(step0 == covered);
    covered += nsteps;
  }
  CHECK(covered == p.steps);
}

}  // namespace awq_test
