// GPTQ's error feedback with backend::cuda: the Gram product on the device against the host's, the
// feedback from either Hessian, and the driver's gptq mode against backend::cpu's (the feedback
// itself is the same host code on both backends; only the Hessian's float rounding differs).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "awq/gptq.hpp"
#include "awq/model/arch/llama.cuh"
#include "awq/model/hf_source.hpp"
#include "awq/model/pipeline.hpp"
#include "driver_case.hpp"
#include "support.hpp"

namespace bc = awq::backend;
using awq::index_t;

TEST_CASE("model on cuda: gram on the device is the host's; the feedback from either gives the same codes") {
  const index_t t = 700, k = 256, n = 48;
  const auto xd = awq_test::random_weights(t, k, awq_test::Dist::outliers, 41, 1.0);
  const std::vector<float> x(xd.begin(), xd.end());
  std::vector<float> hc(static_cast<std::size_t>(k * k));
  bc::cpu::gram(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major(hc.data(), k, k));
  const awq::cuda::DeviceBuffer<float> xg(x);
  awq::cuda::DeviceBuffer<float> hg_dev(std::vector<float>(hc.size(), std::nanf("")));  // poisoned
  bc::cuda::gram(awq::make_row_major<const float>(xg.data(), t, k), awq::make_row_major(hg_dev.data(), k, k));
  const std::vector<float> hg = hg_dev.download();
  double worst = 0;
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) {
      const double d = std::fabs(double(hg[static_cast<std::size_t>(i * k + j)]) - hc[static_cast<std::size_t>(i * k + j)]);
      worst = std::max(worst, d / std::sqrt(double(hc[static_cast<std::size_t>(i * k + i)]) * hc[static_cast<std::size_t>(j * k + j)]));
    }
  MESSAGE("gram, GPU vs CPU: worst difference relative to |x_i||x_j| " << worst);
  CHECK(worst < 1e-5);

  const awq::GptqFactor fc(awq::make_row_major<const float>(hc.data(), k, k)), fg(awq::make_row_major<const float>(hg.data(), k, k));
  const auto wd = awq_test::random_weights(n, k, awq_test::Dist::normal, 42, 1.0);
  const awq::QuantSpec q{4, 64, true};
  std::vector<float> wc(wd.begin(), wd.end()), wg = wc;
  const auto qc = awq::model::finalize_linear_gptq(awq::make_row_major(wc.data(), n, k), q, fc, {});
  const auto qg = awq::model::finalize_linear_gptq(awq::make_row_major(wg.data(), n, k), q, fg, {});
  long diff = 0;
  for (std::size_t i = 0; i < qc.codes.size(); ++i) diff += qc.codes[i] != qg.codes[i];
  MESSAGE(diff << " of " << qc.codes.size() << " codes differ");
  CHECK(diff * 100 <= static_cast<long>(qc.codes.size()));
}

TEST_CASE("model on cuda: the driver's gptq mode gives the CPU backend's streams on a Qwen2 checkpoint") {
  const awq_test::DriverCase dc(awq_test::golden_dir("arch_qwen2_bias") + "/hf", {4, 16}, {2, 16}, 11);
  awq::model::PipelineOptions opt;
  opt.block.mode = awq::model::SearchMode::parse("gptq");
  const std::vector<awq::model::StreamKind> kinds = {awq::model::StreamKind::fp, awq::model::StreamKind::awq};
  const auto cpu = dc.run<bc::cpu, awq::model::Llama>(kinds, opt), gpu = dc.run<bc::cuda, awq::model::Llama>(kinds, opt);
  // As the reference mode's driver test: a clip bound within float noise can flip a code, and here
  // the flip also moves the later columns' feedback in its row.
  for (std::size_t k = 0; k < 2; ++k) {
    const double err = awq_test::max_rel_err(gpu[k].hidden.data(), cpu[k].hidden.data(), cpu[k].hidden.size());
    MESSAGE("stream " << k << " GPU vs CPU relative error " << err);
    CHECK(err < (k == 0 ? 1e-5 : 2e-2));
  }
}
