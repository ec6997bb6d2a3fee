// A Llama-family model of random weights, for the engines' tests and speed runs: a weight source
// (config(), contains(), load()) whose tensors are drawn from a seed and the tensor's name, and
// random AutoAWQ GEMM tensors for the 4-bit linears, drawn directly (no quantization run).
// Linears ~ N(0, 1/K) in effect, embeddings N(0, 1), norms 1 + N(0, 0.1): activations of unit
// size through the blocks and logits that are neither flat nor one-hot.
#pragma once

#include <awq/awq.hpp>
#include <awq/model/arch/llama.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "llama/engine.hpp"

namespace awq_example {

namespace detail {
inline std::uint64_t splitmix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline std::uint64_t name_seed(const std::string& name, std::uint64_t seed) {
  std::uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h;
}
// n values of uniform(−a, a) (variance a²/3), drawn in blocks so the cores share the work and the
// values do not depend on their number.
inline std::vector<float> uniform(std::size_t n, float a, std::uint64_t seed) {
  std::vector<float> v(n);
  constexpr awq::index_t kBlock = 1 << 14;
  const awq::index_t blocks = static_cast<awq::index_t>((n + kBlock - 1) / kBlock);
  awq::backend::cpu::parallel_for(blocks, [&](awq::index_t b0, awq::index_t b1) {
    for (awq::index_t b = b0; b < b1; ++b) {
      std::uint64_t s = seed + static_cast<std::uint64_t>(b) * 0x632BE59BD9B4E019ull;
      const std::size_t e = std::min(n, static_cast<std::size_t>(b + 1) * kBlock);
      for (std::size_t i = static_cast<std::size_t>(b) * kBlock; i < e; ++i)
        v[i] = a * (static_cast<float>(splitmix(s) >> 40) * 0x1.0p-23f - 1.0f);
    }
  });
  return v;
}
}  // namespace detail

/// \brief The weight source of a random Llama of config `cfg` (validated by awq::model::Llama).
struct RandomLlama {
  awq::model::ModelConfig cfg;
  std::uint64_t seed = 1;

  const awq::model::ModelConfig& config() const { return cfg; }
  bool contains(const std::string&) const { return true; }
  std::vector<float> load(const std::string& name, const std::vector<std::int64_t>& shape) const {
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    const std::uint64_t s = detail::name_seed(name, seed);
    const bool norm = name.find("norm") != std::string::npos;
    const bool embed = name == awq::model::Llama::embed_name;
    const float a = norm ? 0.1f : embed ? 1.0f : 1.0f / std::sqrt(static_cast<float>(shape.back()));
    std::vector<float> v = detail::uniform(n, a * std::sqrt(3.0f), s);
    if (norm)
      for (float& x : v) x += 1.0f;
    return v;
  }
};

/// \brief Owning random AutoAWQ GEMM tensors of one [n, k] linear (group `group`): codes and
///        zeros uniform in 0..15, scales such that (q − z)·s has variance about 1/k.
struct RandomAwqLinear {
  std::vector<std::int32_t> qweight, qzeros;
  std::vector<Eigen::half> scales;
  awq::index_t n = 0, k = 0, group = 0;

  RandomAwqLinear(awq::index_t out, awq::index_t in, awq::index_t g, std::uint64_t seed) : n(out), k(in), group(g) {
    awq::detail::require(out % 8 == 0 && g > 0 && in % g == 0, "RandomAwqLinear: ", out, " x ", in, " with group ", g,
                         " (out a multiple of 8, in of the group)");
    std::uint64_t s = seed;
    qweight.resize(static_cast<std::size_t>(k * n / 8));
    qzeros.resize(static_cast<std::size_t>(k / g * n / 8));
    for (auto* v : {&qweight, &qzeros})
      for (auto& w : *v) w = static_cast<std::int32_t>(detail::splitmix(s));
    // (q − z) with q, z uniform in 0..15: variance 2 · 255 / 12 = 42.5.
    const std::vector<float> u = detail::uniform(static_cast<std::size_t>(k / g * n), 0.5f, seed ^ 0x5EEDull);
    const float base = 1.0f / std::sqrt(42.5f * static_cast<float>(k));
    scales.resize(u.size());
    for (std::size_t i = 0; i < u.size(); ++i) scales[i] = Eigen::half(base * (1.0f + u[i]));
  }
  awq::AwqGemmWeights view() const {
    return {awq::make_row_major<const std::int32_t>(qweight.data(), k, n / 8),
            awq::make_row_major<const std::int32_t>(qzeros.data(), k / group, n / 8),
            awq::make_row_major<const Eigen::half>(scales.data(), k / group, n)};
  }
};

/// \brief A random 4-bit model: the embedding and norms of `src`, every linear Linear(random
///        AutoAWQ tensors of group `group`, bias); the same seed gives the same codes to any Linear.
///        `threads` blocks are built at a time (Linear's constructor must allow it).
template <class Linear>
LlamaWeights<Linear> load_random_awq(const RandomLlama& src, awq::index_t group, int threads = 1) {
  return load_weights<Linear>(
      src,
      [&](const std::string& name, const std::vector<std::int64_t>& shape, std::vector<float> bias) {
        const RandomAwqLinear r(shape[0], shape[1], group, detail::name_seed(name, src.seed));
        return Linear(r.view(), std::move(bias));
      },
      threads);
}

}  // namespace awq_example
