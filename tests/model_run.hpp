// One fixed AWQ run over a Hugging Face directory through the library's driver, its result
// hashed block by block (FNV-1a over codes, zeros, scales and folded tensors, so nothing
// accumulates): what the streaming test runs both in a measured child process (model_child.cpp)
// and in the test process, to compare.
#pragma once

#include <awq/model/arch/llama.hpp>
#include <awq/model/hf_source.hpp>
#include <awq/model/pipeline.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace awq_test {

inline std::uint64_t quantize_hf_dir(const std::string& dir) {
  const auto src = awq::model::HfSource::open(dir);
  const auto& c = src.config();
  const awq::model::Batch calib{1, 32};
  std::vector<float> h(static_cast<std::size_t>(calib.tokens() * c.hidden));
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>(static_cast<int>((i * 2654435761u) % 2001) - 1000) / 500.0f;
  std::vector<awq::model::Stream> none;
  awq::model::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{4, 128, true};
  std::uint64_t hash = 1469598103934665603ull;
  const auto mix = [&](const void* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) hash = (hash ^ static_cast<const std::uint8_t*>(p)[i]) * 1099511628211ull;
  };
  awq::model::quantize_model<awq::backend::cpu, awq::model::Llama>(src, calib, h, none, opt, [&](const awq::model::QuantizedBlock& b) {
    for (const auto& [n, q] : b.linears) {
      mix(q.codes.data(), q.codes.size());
      mix(q.zeros.data(), q.zeros.size());
      mix(q.scales.data(), q.scales.size() * sizeof(q.scales[0]));
    }
    for (const auto& [n, v] : b.tensors) mix(v.data(), v.size() * sizeof(float));
  });
  return hash;
}

}  // namespace awq_test
