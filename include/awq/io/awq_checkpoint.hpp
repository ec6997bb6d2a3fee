/// \file
/// \brief Importer for AWQ checkpoints in the AutoAWQ "GEMM" layout (what AutoAWQ, vLLM and
///        transformers read and write): for every quantized linear `<name>.qweight` (I32
///        [K, N/8]), `<name>.qzeros` (I32 [K/G, N/8]) and `<name>.scales` (F16 [K/G, N]).
///
/// Everything is validated before use: names, dtypes, ranks, shapes against each other, the
/// group size, and every scale (finite, not negative). The result owns its memory and hands out
/// the views the W4A16 kernels take.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "awq/error.hpp"
#include "awq/io/safetensors.hpp"
#include "awq/layout/awq_gemm.hpp"
#include "awq/pack.hpp"
#include "awq/view.hpp"

namespace awq {
namespace io {

/// \brief One quantized linear layer read from a checkpoint (W is [N, K]).
struct AwqGemmLinear {
  std::string name;                    ///< the tensor prefix, e.g. "model.layers.0.mlp.up_proj"
  index_t k = 0;                       ///< input features
  index_t n = 0;                       ///< output features
  index_t group = 0;                   ///< group size
  std::vector<std::int32_t> qweight;   ///< [K, N/8]
  std::vector<std::int32_t> qzeros;    ///< [K/G, N/8]
  std::vector<Eigen::half> scales;     ///< [K/G, N]

  /// Views for awq::w4a16_gemm.
  AwqGemmWeights view() const {
    return {make_row_major(qweight.data(), k, n / 8), make_row_major(qzeros.data(), k / group, n / 8),
            make_row_major(scales.data(), k / group, n)};
  }

  /// w [N, K] = (q − z) · s in float.
  void dequantize(const MatrixView<float>& w) const {
    awq::detail::require_shape(w, n, k, "awq::io::AwqGemmLinear::dequantize", "w");
    for (index_t kk = 0; kk < k; ++kk) {
      const index_t g = kk / group;
      for (index_t c = 0; c < n / 8; ++c) {
        const auto q = static_cast<std::uint32_t>(qweight[static_cast<std::size_t>(kk * (n / 8) + c)]);
        const auto z = static_cast<std::uint32_t>(qzeros[static_cast<std::size_t>(g * (n / 8) + c)]);
        for (int i = 0; i < 8; ++i) {
          const index_t col = 8 * c + kAwqPackOrder[static_cast<std::size_t>(i)];
          const float s = static_cast<float>(scales[static_cast<std::size_t>(g * n + col)]);
          w(col, kk) = (static_cast<float>((q >> (4 * i)) & 0xFu) - static_cast<float>((z >> (4 * i)) & 0xFu)) * s;
        }
      }
    }
  }
};

/// \brief An AutoAWQ-GEMM checkpoint (one safetensors file) with its quantized linears.
class AwqCheckpoint {
 public:
  /// Reads and validates the safetensors container; linears are validated by linear().
  static AwqCheckpoint open(const std::string& path) { return AwqCheckpoint(SafetensorsFile::open(path), path); }
  /// The same from bytes in memory (`name` is used in messages).
  static AwqCheckpoint from_bytes(std::vector<std::uint8_t> bytes, const std::string& name = "<memory>") {
    return AwqCheckpoint(SafetensorsFile::from_bytes(std::move(bytes), name), name);
  }

  /// Prefixes of the quantized linears (every `<prefix>.qweight`), sorted.
  std::vector<std::string> linears() const {
    std::vector<std::string> out;
    const std::string suffix = ".qweight";
    for (const auto& t : file_.names())
      if (t.size() > suffix.size() && t.compare(t.size() - suffix.size(), suffix.size(), suffix) == 0)
        out.push_back(t.substr(0, t.size() - suffix.size()));
    return out;
  }

  /// The underlying safetensors file (embeddings, norms and other unquantized tensors).
  const SafetensorsFile& file() const noexcept { return file_; }

  /// Reads and validates the linear `prefix`.
  /// \throws awq::Error naming the file, the tensor and the offending value.
  AwqGemmLinear linear(const std::string& prefix) const {
    const std::string where = awq::detail::concat("awq::io::AwqCheckpoint: ", path_, ": ");
    for (const char* part : {".qweight", ".qzeros", ".scales"})
      awq::detail::require(file_.contains(prefix + part), where, "no tensor '", prefix, part, "' (is '", prefix,
                           "' a quantized linear of an AutoAWQ GEMM checkpoint?)");
    const SafetensorsTensor qw = file_.tensor(prefix + ".qweight"), qz = file_.tensor(prefix + ".qzeros"),
                            sc = file_.tensor(prefix + ".scales");
    auto check_2d = [&](const SafetensorsTensor& t, const char* part, const char* dtype) {
      awq::detail::require(t.dtype == dtype, where, "'", prefix, part, "' has dtype ", t.dtype, ", expected ", dtype);
      awq::detail::require(t.shape.size() == 2, where, "'", prefix, part, "' has ", t.shape.size(), " dimensions, expected 2");
    };
    check_2d(qw, ".qweight", "I32");
    check_2d(qz, ".qzeros", "I32");
    check_2d(sc, ".scales", "F16");
    AwqGemmLinear L;
    L.name = prefix;
    L.k = qw.shape[0];
    L.n = qw.shape[1] * 8;
    const index_t groups = sc.shape[0];
    awq::detail::require(L.k > 0 && L.n > 0, where, "'", prefix, ".qweight' is empty (", qw.shape[0], " x ", qw.shape[1], ")");
    awq::detail::require(sc.shape[1] == L.n, where, "'", prefix, ".scales' has ", sc.shape[1], " columns, qweight implies N = ", L.n);
    awq::detail::require(groups > 0 && L.k % groups == 0, where, "'", prefix, ".scales' has ", groups,
                         " rows, which does not divide K = ", L.k);
    L.group = L.k / groups;
    awq::detail::require(AwqGemmWeights::group_supported(L.group, L.k), where, "'",
                         prefix, "' has group size ", L.group, " (not 32, 64, 128, 256 or K)");
    awq::detail::require(qz.shape[0] == groups && qz.shape[1] == qw.shape[1], where, "'", prefix, ".qzeros' is ", qz.shape[0],
                         " x ", qz.shape[1], ", expected ", groups, " x ", qw.shape[1]);
    L.qweight = as_vector<std::int32_t>(qw);
    L.qzeros = as_vector<std::int32_t>(qz);
    L.scales = as_vector<Eigen::half>(sc);
    for (index_t g = 0; g < groups; ++g)
      for (index_t c = 0; c < L.n; ++c) {
        const float s = static_cast<float>(L.scales[static_cast<std::size_t>(g * L.n + c)]);
        awq::detail::require(std::isfinite(s) && s >= 0.0f, where, "'", prefix, ".scales' holds ", s, " at group ", g,
                             ", output ", c, " (scales must be finite and not negative)");
      }
    return L;
  }

 private:
  AwqCheckpoint(SafetensorsFile f, std::string path) : file_(std::move(f)), path_(std::move(path)) {}

  template <class T>
  static std::vector<T> as_vector(const SafetensorsTensor& t) {
    std::vector<T> v(t.data.size() / sizeof(T));
    if (!v.empty()) std::memcpy(static_cast<void*>(v.data()), t.data.data(), v.size() * sizeof(T));
    return v;
  }

  SafetensorsFile file_;
  std::string path_;
};

}  // namespace io
}  // namespace awq
