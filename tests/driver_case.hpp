// A small seeded driver run over a Hugging Face directory, for tests that compare the streams of
// two runs (two backends, two product precisions, kernels against dequantized weights).
#pragma once

#include <awq/model/hf_source.hpp>
#include <awq/model/pipeline.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "support.hpp"

namespace awq_test {

/// The checkpoint in `dir`, calibration hidden states with outlier channels and evaluation hidden
/// states (seeds `seed` and `seed` + 1), and evaluation token ids spread over the vocabulary.
struct DriverCase {
  awq::model::HfSource src;
  awq::model::Batch calib, eval;
  std::vector<float> calib_hidden, eval_hidden;
  std::vector<int> tokens;

  DriverCase(const std::string& dir, awq::model::Batch calib_batch, awq::model::Batch eval_batch, std::uint64_t seed)
      : src(awq::model::HfSource::open(dir)), calib(calib_batch), eval(eval_batch) {
    const auto& c = src.config();
    const auto h = random_weights(calib.tokens(), c.hidden, Dist::outliers, seed, 1.0);
    const auto e = random_weights(eval.tokens(), c.hidden, Dist::normal, seed + 1, 1.0);
    calib_hidden.assign(h.begin(), h.end());
    eval_hidden.assign(e.begin(), e.end());
    for (awq::index_t i = 0; i < eval.tokens(); ++i) tokens.push_back(static_cast<int>((i * 7907 + 3) % c.vocab));
  }

  /// Streams of `kinds` over the evaluation hidden states, after quantize_model<Backend, Arch>
  /// with `opt` at W4 g32 with zero points (what the sink receives is dropped).
  template <class Backend, class Arch>
  std::vector<awq::model::Stream> run(const std::vector<awq::model::StreamKind>& kinds, awq::model::PipelineOptions opt = {}) const {
    std::vector<awq::model::Stream> s;
    for (const auto k : kinds) s.push_back({k, eval, eval_hidden});
    opt.block.quant = awq::QuantSpec{4, 32, true};
    awq::model::quantize_model<Backend, Arch>(src, calib, calib_hidden, s, opt, [](const awq::model::QuantizedBlock&) {});
    return s;
  }
};

}  // namespace awq_test
