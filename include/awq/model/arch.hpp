/// \file
/// \brief The architecture policy concept of the model driver (awq/model/pipeline.hpp): what a
///        type `Arch` must provide so that the driver can quantize its blocks, and the plain
///        structs it describes its linear groups with.
///
/// An architecture policy is a type with static members (see awq::model::Llama for one):
/// \code
/// struct MyArch {
///   static constexpr const char* name = "my-arch";
///   static void check(const ModelConfig& c);                           // awq::Error if unsupported
///   static std::string block_prefix(int layer);                        // "model.layers.3."
///   static std::vector<TensorSpec> block_tensors(const ModelConfig& c);  // names relative to the prefix
///   static std::vector<std::string> linears(const ModelConfig& c);     // quantized linears ("self_attn.q_proj")
///   static std::vector<LinearGroup> groups(const ModelConfig& c);      // scale groups, in search order
///   static std::vector<ClipTarget> clip_targets(const ModelConfig& c); // clip-searched linears
///   static constexpr int n_inputs = 4;                                 // captured group inputs
///   static index_t input_cols(const ModelConfig& c, int slot);         // columns of input `slot`
///   // out = block(x); when cap is non-null, (*cap)[slot] = the input of every group reading `slot`.
///   template <class Backend> static void forward(const ModelConfig&, const Batch&, const Block<Backend>&,
///       const MatrixView<const float>& x, const MatrixView<float>& out, std::vector<Tensor<Backend>>* cap);
///   // Optional: the inputs alone, skipping what only the output needs (the driver's sequential
///   // mode takes a block's output from its quantized weights, so the capture's is not used).
///   template <class Backend> static void capture(const ModelConfig&, const Batch&, const Block<Backend>&,
///       const MatrixView<const float>& x, std::vector<Tensor<Backend>>& cap);
///   // Calls f(module) with the search_scales block (awq/search/scale.hpp) of group g: the module
///   // whose output is the loss, taking the group's linears' weights as its arguments.
///   template <class Backend, class F> static void with_module(const ModelConfig&, const Batch&,
///       const Block<Backend>&, const LinearGroup& g, F&& f);
/// };
/// \endcode
/// The driver never knows a model's struct or a file format: it loads `block_tensors` from a
/// weight source, runs `forward` to capture inputs, and folds scales by the groups' description.
/// The model's ends (awq/model/head.hpp) read further names from a policy: its embedding, final
/// norm and output projection, and optionally learned positions and a norm bias. Shipped:
/// awq::model::Llama (RMSNorm, RoPE, SwiGLU) and awq::model::Opt (LayerNorm with bias, ReLU).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "awq/model/block.hpp"
#include "awq/model/config.hpp"
#include "awq/search/scale.hpp"

namespace awq::model {

/// \brief A scale group: linears that share one input, the op their scales fold into and the
///        module whose output is the search loss.
struct LinearGroup {
  /// What produces the group's input, where 1/s is folded.
  /// The fold is exact only when what lies between `prev` and the input commutes with a positive
  /// per-channel scale: a norm's affine part, identity, ReLU (the shipped policies). Across GELU or
  /// SiLU it changes the model; there, give the block a per-channel multiplier after the activation
  /// (a ones vector among its tensors, applied in `forward`) and fold into it as a `norm`, which
  /// is what AutoAWQ's ScaledActivation does.
  enum class Prev {
    norm,   ///< a norm's weight (and bias), or any per-channel multiplier: `prev` + ".weight" / ".bias"
    linear  ///< a previous linear's output rows (and bias), `prev_row` on: those rows are the input's channels
  };
  std::string name;                  ///< key of the group ("qkv"): checkpoints and reports
  std::vector<std::string> linears;  ///< linears fed by the input, e.g. {"self_attn.q_proj", …}
  Prev prev_kind = Prev::norm;       ///< kind of `prev`
  std::string prev;                  ///< "input_layernorm", or "self_attn.v_proj"
  int input = 0;                     ///< slot of the captured input
  std::string module;                ///< loss module ("self_attn", "mlp"), empty: the linears themselves
  /// Prev::linear: the first of `prev`'s output rows that make the input. Non-zero for a fused
  /// projection, e.g. GPT-2's c_attn [3 H, H], whose rows 2 H .. 3 H − 1 are the v that out_proj
  /// reads; its other rows are left as they are.
  index_t prev_row = 0;
};

/// \brief A linear whose weights the clip search bounds, and the captured input it reads.
struct ClipTarget {
  std::string name;    ///< key ("v"): checkpoints and reports
  std::string linear;  ///< "self_attn.v_proj"
  int input = 0;       ///< slot of the captured input
};

/// \brief Checks `Arch`'s description of its block (groups, clip targets, input slots, tensor
///        shapes) and that `spec`'s groups divide every quantized linear's input, before any block is
///        read: a wrong description would otherwise fail deep in a search, or fold silently wrong.
///        awq::Error naming the architecture and the group, linear or slot at fault.
template <class Arch>
void check_description(const ModelConfig& c, const QuantSpec& spec) {
  static_assert(Arch::n_inputs >= 1, "an architecture captures at least one group input");
  spec.validate();
  const std::string fn = std::string("awq::model: architecture '") + Arch::name + "'";
  std::map<std::string, std::vector<std::int64_t>> shapes;
  for (const auto& t : Arch::block_tensors(c)) shapes[t.name] = t.shape;
  const auto shape = [&](const std::string& name) {
    const auto it = shapes.find(name);
    return it == shapes.end() ? std::vector<std::int64_t>{} : it->second;
  };
  const auto in_features = [&](const std::string& l) {
    const auto w = shape(l + ".weight");
    detail::require(w.size() == 2 && w[0] > 0 && w[1] > 0, fn, ": '", l, "' has no [out, in] weight among the block's tensors");
    return static_cast<index_t>(w[1]);
  };
  const auto slot_cols = [&](int slot, const std::string& what) {
    detail::require(slot >= 0 && slot < Arch::n_inputs, fn, ": ", what, " reads input slot ", slot, ", but the block captures ",
                    Arch::n_inputs, " inputs");
    return Arch::input_cols(c, slot);
  };
  for (const auto& l : Arch::linears(c)) {
    const index_t in = in_features(l);
    detail::require(spec.group_size == kPerChannel || in % spec.group_size == 0, fn, ": group_size ", spec.group_size,
                    " does not divide the ", in, " input features of '", l, "'");
  }
  std::map<std::string, std::string> group_of;
  for (const auto& g : Arch::groups(c)) {
    detail::require(!g.linears.empty(), fn, ": group '", g.name, "' has no linear");
    const index_t cols = slot_cols(g.input, "group '" + g.name + "'");
    for (const auto& l : g.linears) {
      const auto [it, fresh] = group_of.emplace(l, g.name);
      detail::require(fresh, fn, ": '", l, "' is in groups '", it->second, "' and '", g.name, "'; one group scales a linear's input");
      detail::require(in_features(l) == cols, fn, ": '", l, "' of group '", g.name, "' has ", in_features(l),
                      " input features, but input slot ", g.input, " has ", cols, " columns");
    }
    const auto pw = shape(g.prev + ".weight");
    if (g.prev_kind == LinearGroup::Prev::norm)
      detail::require(pw.size() == 1 && pw[0] == cols, fn, ": group '", g.name, "' folds into '", g.prev,
                      ".weight', which is not a vector of its ", cols, " input channels");
    else
      detail::require(pw.size() == 2 && g.prev_row >= 0 && pw[0] >= g.prev_row + cols, fn, ": group '", g.name, "' folds into rows ",
                      g.prev_row, " .. ", g.prev_row + cols - 1, " of '", g.prev, "', which has ", pw.size() == 2 ? pw[0] : 0,
                      " output rows");
  }
  for (const auto& t : Arch::clip_targets(c)) {
    const index_t cols = slot_cols(t.input, "clip target '" + t.name + "'");
    detail::require(in_features(t.linear) == cols, fn, ": clip target '", t.name, "' ('", t.linear, "') has ", in_features(t.linear),
                    " input features, but input slot ", t.input, " has ", cols, " columns");
  }
}

/// \brief Checks what a capture forward left in `in`: Arch::n_inputs tensors of [tokens,
///        Arch::input_cols(c, slot)] (awq::Error naming the architecture and the slot).
template <class Arch, class Backend>
void check_capture(const ModelConfig& c, index_t tokens, const std::vector<Tensor<Backend>>& in) {
  const std::string fn = std::string("awq::model: the capture of architecture '") + Arch::name + "'";
  detail::require(in.size() == static_cast<std::size_t>(Arch::n_inputs), fn, " holds ", in.size(), " inputs, expected ", Arch::n_inputs);
  for (int s = 0; s < Arch::n_inputs; ++s) {
    const Tensor<Backend>& t = in[static_cast<std::size_t>(s)];
    detail::require(t.rows == tokens && t.cols == Arch::input_cols(c, s) && static_cast<index_t>(t.data.size()) == tokens * t.cols, fn,
                    ": input slot ", s, " is ", t.rows, " x ", t.cols, " (", t.data.size(), " values), expected ", tokens, " x ",
                    Arch::input_cols(c, s));
  }
}

/// The weights and biases of group `g`'s linears in `blk`, in order: a module's search arguments,
/// or the module itself as `LinearsBlock` when the loss is the linears' own output.
template <class Backend>
std::vector<Linear<float>> group_linears(const Block<Backend>& blk, const LinearGroup& g) {
  std::vector<Linear<float>> lin;
  for (const auto& l : g.linears) lin.push_back({linear_weight(blk, l), linear_bias(blk, l)});
  return lin;
}

/// The capture buffers of `Arch::forward` over `tokens` rows: `*cap` when given, else `local`,
/// resized to `Arch::n_inputs` tensors of [tokens, Arch::input_cols(c, slot)].
template <class Arch, class Backend>
std::vector<Tensor<Backend>>& input_buffers(const ModelConfig& c, index_t tokens, std::vector<Tensor<Backend>>* cap,
                                            std::vector<Tensor<Backend>>& local) {
  std::vector<Tensor<Backend>>& in = cap ? *cap : local;
  in.resize(Arch::n_inputs);
  for (int s = 0; s < Arch::n_inputs; ++s) {
    Tensor<Backend>& t = in[static_cast<std::size_t>(s)];
    t.rows = tokens;
    t.cols = Arch::input_cols(c, s);
    t.data = typename Backend::template buffer<float>(static_cast<std::size_t>(tokens * t.cols));
  }
  return in;
}

/// Whether `Arch` has the optional `capture` for `Backend`.
template <class Arch, class Backend, class = void>
struct has_capture : std::false_type {};
template <class Arch, class Backend>
struct has_capture<Arch, Backend,
                   std::void_t<decltype(Arch::template capture<Backend>(
                       std::declval<const ModelConfig&>(), std::declval<const Batch&>(), std::declval<const Block<Backend>&>(),
                       std::declval<const MatrixView<const float>&>(), std::declval<std::vector<Tensor<Backend>>&>()))>> : std::true_type {};

/// The group inputs of `blk` on x into `cap`, the output not wanted: `Arch::capture` where the
/// policy has it, else `Arch::forward` with `scratch` [rows of x, hidden] as its output.
template <class Arch, class Backend>
void capture_inputs(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                    const MatrixView<float>& scratch, std::vector<Tensor<Backend>>& cap) {
  if constexpr (has_capture<Arch, Backend>::value)
    Arch::template capture<Backend>(c, b, blk, x, cap);
  else
    Arch::template forward<Backend>(c, b, blk, x, scratch, &cap);
}

}  // namespace awq::model
