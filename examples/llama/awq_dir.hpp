// An AWQ checkpoint directory (our export, or AutoAWQ's "GEMM" output: config.json with a
// quantization_config, safetensors holding <linear>.qweight/.qzeros/.scales) as the engine's
// weights: what the engine can run is checked first, then every linear is read once; and the same
// directory dequantized as a weight source for the library's driver and model ends, any architecture.
#pragma once

#include <awq/io/hf_checkpoint.hpp>
#include <awq/model/finalize.hpp>
#include <awq/model/hf_source.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "llama/engine.hpp"

namespace awq_example {

/// What the engine runs, for messages.
inline const char* awq_runnable() {
  return "AutoAWQ GEMM checkpoints: quant_method \"awq\", version \"gemm\", bits 4, zero_point true, group_size 32, 64, 128, 256 "
         "or -1 (per channel), no modules_to_not_convert";
}

/// Whether config.json has a quantization_config (a quantized checkpoint).
inline bool is_quantized(const nlohmann::json& config) { return config.is_object() && config.contains("quantization_config"); }

/// \brief Throws awq::Error naming the field and its value unless `config`'s quantization_config
///        is one the engine runs (awq_runnable()); `where` names the file.
inline void check_quantization_config(const nlohmann::json& config, const std::string& where) {
  const nlohmann::json& q = config.at("quantization_config");
  const auto fail = [&](const std::string& what) {
    return awq::Error(where + ": quantization_config " + what + "; this engine runs " + awq_runnable());
  };
  if (!q.is_object()) throw fail("is " + q.dump() + ", not an object");
  const auto str = [&](const char* k) { return q.contains(k) && q[k].is_string() ? q[k].get<std::string>() : std::string(); };
  const auto lower = [](std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  };
  if (lower(str("quant_method")) != "awq") throw fail("has quant_method " + (q.contains("quant_method") ? q["quant_method"].dump() : "(none)"));
  if (lower(str("version")) != "gemm") throw fail("has version " + (q.contains("version") ? q["version"].dump() : "(none)"));
  if (!(q.contains("bits") && q["bits"] == 4) && !(q.contains("w_bit") && q["w_bit"] == 4))
    throw fail("has bits " + (q.contains("bits") ? q["bits"].dump() : q.contains("w_bit") ? q["w_bit"].dump() : "(none)"));
  const nlohmann::json zp = q.contains("zero_point") ? q["zero_point"] : nlohmann::json(true);
  if (zp != true) throw fail("has zero_point " + zp.dump());
  const nlohmann::json gs = q.contains("group_size") ? q["group_size"] : q.contains("q_group_size") ? q["q_group_size"] : nlohmann::json();
  if (!(gs == 32 || gs == 64 || gs == 128 || gs == 256 || gs == -1)) throw fail("has group_size " + (gs.is_null() ? std::string("(none)") : gs.dump()));
  if (q.contains("modules_to_not_convert") && !q["modules_to_not_convert"].is_null() &&
      !(q["modules_to_not_convert"].is_array() && q["modules_to_not_convert"].empty()))
    throw fail("has modules_to_not_convert " + q["modules_to_not_convert"].dump());
}

/// \brief The 4-bit linear `name` (weight shape [n, k] = `shape`) of an AutoAWQ GEMM checkpoint,
///        its .qweight/.qzeros/.scales checked against the shape and copied out.
inline awq::model::AwqGemmPacked read_awq_gemm(const awq::model::HfSource& src, const std::string& name,
                                               const std::vector<std::int64_t>& shape) {
  const awq::io::HfCheckpoint& ck = src.checkpoint();
  const auto part = [&](const char* suffix, const char* dtype) {
    const std::string t = name + suffix;
    awq::detail::require(ck.contains(t), src.dir(), ": no tensor '", t, "' (", name, " is not a quantized linear of an AutoAWQ GEMM checkpoint)");
    awq::io::SafetensorsTensor v = ck.tensor(t);
    awq::detail::require(v.dtype == dtype && v.shape.size() == 2, src.dir(), ": tensor '", t, "' is ", v.dtype, " of rank ",
                         v.shape.size(), ", expected ", dtype, " of rank 2");
    return v;
  };
  const auto qw = part(".qweight", "I32"), qz = part(".qzeros", "I32"), sc = part(".scales", "F16");
  const std::int64_t n = shape[0], k = shape[1];
  awq::detail::require(qw.shape == std::vector<std::int64_t>{k, n / 8} && n % 8 == 0, src.dir(), ": '", name, ".qweight' is ",
                       qw.shape[0], " x ", qw.shape[1], ", expected ", k, " x ", n / 8, " for a ", n, " x ", k, " linear");
  const std::int64_t groups = sc.shape[0];
  awq::detail::require(groups > 0 && sc.shape[1] == n && qz.shape == std::vector<std::int64_t>{groups, n / 8}, src.dir(), ": '",
                       name, ".scales' (", sc.shape[0], " x ", sc.shape[1], ") and '.qzeros' (", qz.shape[0], " x ", qz.shape[1],
                       ") do not fit a ", n, " x ", k, " linear");
  // quantization_config's group_size against the tensors' own (k / groups): the kernels follow
  // the scales' shape, so a config that says otherwise describes another checkpoint (a stale or
  // hand-edited config.json), and whoever reads the config (AutoAWQ, vLLM) would misread these.
  const nlohmann::json& cj = src.config_json();
  if (cj.contains("quantization_config") && cj["quantization_config"].is_object()) {
    const nlohmann::json& q = cj["quantization_config"];
    const nlohmann::json gs = q.contains("group_size") ? q["group_size"] : q.contains("q_group_size") ? q["q_group_size"] : nlohmann::json();
    if (gs.is_number_integer()) {
      const std::int64_t g = gs.get<std::int64_t>(), actual = k % groups == 0 ? k / groups : 0;
      awq::detail::require(g == -1 ? groups == 1 : (g > 0 && k % g == 0 && k / g == groups), src.dir(), "/config.json: quantization_config ",
                           q.contains("group_size") ? "group_size " : "q_group_size ", g, " does not match tensor '", name, ".scales' (",
                           groups, " groups over ", k, " inputs: group size ", actual ? std::to_string(actual) : std::string("uneven"),
                           groups == 1 ? ", i.e. -1 (per channel)" : "", ")");
    }
  }
  awq::model::AwqGemmPacked p;
  p.in = k;
  p.out = n;
  p.groups = groups;
  p.qweight.resize(qw.data.size() / 4);
  p.qzeros.resize(qz.data.size() / 4);
  p.scales.resize(sc.data.size() / 2);
  std::memcpy(p.qweight.data(), qw.data.data(), qw.data.size());
  std::memcpy(p.qzeros.data(), qz.data.data(), qz.data.size());
  std::memcpy(static_cast<void*>(p.scales.data()), sc.data.data(), sc.data.size());
  return p;
}

/// \brief The engine's weights from an AWQ checkpoint directory `src` (its quantization_config
///        checked): each 4-bit linear handed to Linear(awq::AwqGemmWeights, bias) once — repacked
///        by W4Linear, dequantized by FpLinear.
template <class Linear>
LlamaWeights<Linear> load_awq_weights(const awq::model::HfSource& src) {
  check_quantization_config(src.config_json(), src.dir() + "/config.json");
  return load_weights<Linear>(src, [&](const std::string& name, const std::vector<std::int64_t>& shape, std::vector<float> bias) {
    return Linear(read_awq_gemm(src, name, shape).view(), std::move(bias));
  });
}

/// \brief An AWQ checkpoint directory as a full-precision weight source (awq/model/source.hpp),
///        for any architecture policy: a quantized linear's "<name>.weight" is its dequantized
///        value, every other tensor is read as stored (fp16 in our exports).
class AwqDequantizedSource {
 public:
  /// Opens `dir` and checks its quantization_config.
  explicit AwqDequantizedSource(const std::string& dir) : src_(awq::model::HfSource::open(dir)) {
    check_quantization_config(src_.config_json(), dir + "/config.json");
  }
  const awq::model::ModelConfig& config() const { return src_.config(); }  ///< from config.json
  /// Whether the checkpoint holds `name`, stored or as a quantized linear's weight.
  bool contains(const std::string& name) const { return src_.contains(name) || !quantized(name).empty(); }
  /// The tensor as fp32, checked against `shape`.
  std::vector<float> load(const std::string& name, const std::vector<std::int64_t>& shape) const {
    const std::string base = quantized(name);
    if (base.empty()) return src_.load(name, shape);
    awq::detail::require(shape.size() == 2, "AwqDequantizedSource: ", name, " is a quantized linear, asked for a tensor of rank ", shape.size());
    return dequantize_awq_gemm(read_awq_gemm(src_, base, shape).view());
  }

 private:
  // The linear's name when `name` is the weight of a quantized linear, else empty.
  std::string quantized(const std::string& name) const {
    const std::string suffix = ".weight";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return {};
    const std::string base = name.substr(0, name.size() - suffix.size());
    return src_.contains(base + ".qweight") ? base : std::string();
  }

  awq::model::HfSource src_;
};

}  // namespace awq_example
