/// \file
/// \brief The whole-model AWQ driver, written once over a backend policy, an architecture policy
///        (awq/model/arch.hpp) and a weight source (awq/model/source.hpp).
///
/// For each block: load its tensors from the source (only that block is in memory), forward the
/// calibration hidden states capturing every group's input, search each group's scales on the
/// original weights, fold them, search the clip bounds on the scaled weights and inputs, clamp,
/// quantize with fp16 scales (awq/model/finalize.hpp; SearchMode::rounding: with GPTQ's error
/// feedback, awq/gptq.hpp), hand the result to a sink, and move on
/// with the block's full-precision output (llm-awq's run_awq semantics; SearchMode::sequential
/// moves on with the quantized block's output instead, and SearchMode::fp_target carries both). Extra activation streams
/// (e.g. evaluation tokens) are carried through every block at full precision, RTN- or
/// AWQ-quantized, so that perplexity needs no second copy of the model. Per-block checkpoints
/// (awq/model/checkpoint.hpp) make an interrupted run resume bit-identically.
#pragma once

#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "awq/detail/serial_worker.hpp"
#include "awq/gptq.hpp"
#include "awq/model/arch.hpp"
#include "awq/model/block.hpp"
#include "awq/model/checkpoint.hpp"
#include "awq/model/config.hpp"
#include "awq/model/finalize.hpp"
#include "awq/model/search_mode.hpp"
#include "awq/progress.hpp"
#include "awq/search/clip.hpp"
#include "awq/search/scale.hpp"

namespace awq::model {

/// \brief Options of the per-block flow.
struct BlockOptions {
  QuantSpec quant{4, 128, true};  ///< quantizer of the searches and the final weights
  bool duo_scaling = false;       ///< AutoAWQ's duo scaling
  bool clip = true;               ///< run the clip search
  /// Sequences whose block-output loss the scale search evaluates (0: all). mean|x| and the clip
  /// search still use every calibration token, so calibration size and search cost decouple.
  int search_seqs = 0;
  SearchMode mode{};              ///< the reference's search, or the improved one's variants
  ProgressCallback progress{};    ///< per search phase
};

/// \brief Folds group `g`'s scales into `blk`: `prev` ÷ s (a norm's weight and bias, or the
///        previous linear's output rows g.prev_row .. g.prev_row + s.size() − 1 and their bias),
///        the group's linears' input columns × s. The block's output is unchanged wherever the op
///        between `prev` and the input commutes with the scale (LinearGroup::Prev).
template <class Backend>
void fold_group(Block<Backend>& blk, const LinearGroup& g, const std::vector<float>& s) {
  const std::string pw = g.prev + ".weight", pb = g.prev + ".bias";
  if (g.prev_kind == LinearGroup::Prev::norm) {
    Backend::scale_cols(blk.at(pw).as_row(), s, true);
    if (blk.contains(pb)) Backend::scale_cols(blk.at(pb).as_row(), s, true);
  } else {
    const auto n = static_cast<index_t>(s.size());
    Backend::scale_rows(blk.at(pw).matrix().middle_rows(g.prev_row, n), s, true);
    if (blk.contains(pb)) Backend::scale_rows(blk.at(pb).as_col().middle_rows(g.prev_row, n), s, true);
  }
  for (const auto& l : g.linears) Backend::scale_cols(blk.at(l + ".weight").matrix(), s, false);
}

/// \brief One block's searches on its captured inputs (`in`, from Arch::forward), modifying `blk`
///        in place: every group searched on the original weights, all folded, then the clip search
///        on the scaled weights and inputs, then the clamp. Not yet quantized. `in` is scaled with
///        the folds. Scales or bounds present in `given` replace the corresponding search.
template <class Backend, class Arch>
BlockResult search_block(const ModelConfig& c, const Batch& b, Block<Backend>& blk, std::vector<Tensor<Backend>>& in,
                         const BlockOptions& opt, const GivenResults* given = nullptr) {
  check_description<Arch>(c, opt.quant);  // quantize_model's check, again for callers that search blocks themselves
  check_capture<Arch>(c, b.tokens(), in);
  ScaleSearchOptions so;
  so.quant = opt.quant;
  so.duo_scaling = opt.duo_scaling;
  so.refine_steps = opt.mode.alpha_refine;
  so.progress = opt.progress;
  BlockResult res;
  const Batch sb{opt.search_seqs > 0 ? std::min(opt.search_seqs, b.n_seq) : b.n_seq, b.seq_len};
  const auto groups = Arch::groups(c);
  for (const auto& g : groups) {
    if (given && given->scales.count(g.name)) {
      res.scales[g.name].scales = given->scales.at(g.name);
      continue;
    }
    const MatrixView<const float> x = in.at(static_cast<std::size_t>(g.input)).matrix();
    std::vector<Linear<float>> lin;
    for (const auto& l : g.linears) {
      const std::string bn = l + ".bias";
      lin.push_back({blk.at(l + ".weight").matrix(), blk.contains(bn) ? blk.at(bn).data.data() : nullptr});
    }
    so.name = "scales " + g.name;
    Arch::template with_module<Backend>(c, sb, blk, g, [&](const auto& module) {
      res.scales[g.name] = search_scales<Backend>(x.middle_rows(0, sb.tokens()), lin, module, so, Backend::channel_abs_mean(x));
    });
  }

  // Fold every group: previous op ÷ s, the linears' input columns × s, the cached input ÷ s.
  for (const auto& g : groups) {
    const std::vector<float>& s = res.scales.at(g.name).scales;
    for (std::size_t i = 0; i < s.size(); ++i)
      detail::require(std::isfinite(s[i]) && s[i] > 0, "awq::model::search_block: scale ", s[i], " of group '", g.name,
                      "' at channel ", i, " is not finite and positive");
    fold_group(blk, g, s);
    Backend::scale_cols(in.at(static_cast<std::size_t>(g.input)).matrix(), s, true);
  }

  // Clip search on the scaled weights and inputs, then the clamp.
  if (opt.clip) {
    ClipSearchOptions co;
    co.quant = opt.quant;
    co.progress = opt.progress;
    const auto targets = Arch::clip_targets(c);
    for (const auto& t : targets) {
      const auto w = blk.at(t.linear + ".weight").matrix();
      const auto it = given ? given->clips.find(t.name) : std::map<std::string, std::vector<float>>::const_iterator();
      if (given && it != given->clips.end()) {
        detail::require(it->second.size() % static_cast<std::size_t>(w.rows()) == 0, "awq::model::search_block: ",
                        it->second.size(), " given clip bounds for '", t.name, "' of ", w.rows(), " rows");
        ClipSearchResult<float> r;
        r.rows = w.rows();
        r.groups = static_cast<index_t>(it->second.size()) / w.rows();
        r.max_val = it->second;
        r.shrink_index.assign(it->second.size(), -1);  // not searched
        res.clips[t.name] = std::move(r);
        continue;
      }
      co.name = "clip " + t.name;
      res.clips[t.name] = search_clip<Backend>(MatrixView<const float>(w),
                                               MatrixView<const float>(in.at(static_cast<std::size_t>(t.input)).matrix()), co);
    }
    for (const auto& t : targets) Backend::clamp_groups(blk.at(t.linear + ".weight").matrix(), res.clips.at(t.name).view());
  }
  return res;
}

/// \brief Quantizes every linear of `blk` with fp16 scales where it lives (Finalize<Backend>,
///        awq/model/finalize.hpp), replacing its weights by their dequantized values; returns the
///        quantized linears by name.
template <class Backend, class Arch>
std::map<std::string, QuantizedLinear> finalize_block(const ModelConfig& c, Block<Backend>& blk, const QuantSpec& spec) {
  std::map<std::string, QuantizedLinear> out;
  for (const auto& l : Arch::linears(c)) {
    out[l] = Finalize<Backend>::run(blk.at(l + ".weight").matrix(), spec);
    require_finite_scales(l, out[l]);
  }
  return out;
}

/// The captured input slot of every quantized linear of `Arch`, from its groups and clip targets.
/// \throws awq::Error naming a linear that neither lists.
template <class Arch>
std::map<std::string, int> linear_inputs(const ModelConfig& c) {
  std::map<std::string, int> m;
  for (const auto& g : Arch::groups(c))
    for (const auto& l : g.linears) m[l] = g.input;
  for (const auto& t : Arch::clip_targets(c)) m[t.linear] = t.input;
  for (const auto& l : Arch::linears(c))
    detail::require(m.count(l) != 0, "awq::model::linear_inputs: ", Arch::name, " gives no input for '", l, "'");
  return m;
}

/// Adds to `cross`, per input slot a quantized linear of `Arch` reads, the products
/// X̃ᵀ(X − X̃) over a run of calibration rows: E, which GPTQ's moved target needs
/// (retarget_linear). X̃ is rows [row0, row0 + n) of the captured inputs `in`, X the same rows'
/// inputs captured from the full-precision model (`fp_in`, n rows each; overwritten). A slot not
/// in `cross` yet is created. Summing over a few sequences at a time keeps the full-precision
/// inputs as small as a chunk; the folds then scale E as they scale the inputs (fold_cross).
template <class Backend, class Arch>
void add_cross_products(const ModelConfig& c, const std::vector<Tensor<Backend>>& in, index_t row0, std::vector<Tensor<Backend>>& fp_in,
                        std::map<int, typename Backend::template buffer<float>>& cross) {
  constexpr const char* fn = "awq::model::add_cross_products";
  using Buf = typename Backend::template buffer<float>;
  detail::require(fp_in.size() == in.size(), fn, ": ", fp_in.size(), " full-precision inputs for ", in.size(), " captured");
  std::map<int, bool> done;
  Buf part;
  for (const auto& [l, slot] : linear_inputs<Arch>(c)) {
    if (done[slot]) continue;
    done[slot] = true;
    detail::require(slot >= 0 && static_cast<std::size_t>(slot) < in.size(), fn, ": input slot ", slot, " of '", l, "' was not captured (",
                    in.size(), " inputs)");
    const Tensor<Backend>& xf = fp_in[static_cast<std::size_t>(slot)];
    const Tensor<Backend>& xq = in[static_cast<std::size_t>(slot)];
    detail::require(xf.cols == xq.cols && row0 >= 0 && row0 + xf.rows <= xq.rows, fn, ": the full-precision input of slot ", slot, " is ",
                    xf.rows, "x", xf.cols, " from row ", row0, ", the captured one ", xq.rows, "x", xq.cols);
    const MatrixView<const float> x = MatrixView<const float>(xq.matrix()).middle_rows(row0, xf.rows);
    const index_t k = xq.cols;
    const bool first = !cross.count(slot);
    if (first) {  // E = X̃ᵀ(X − X̃)
      Buf e(static_cast<std::size_t>(k * k));
      Backend::subtract(MatrixView<const float>(xf.matrix()), x, xf.matrix());
      Backend::cross_gram(x, MatrixView<const float>(xf.matrix()), make_row_major(e.data(), k, k));
      cross.emplace(slot, std::move(e));
    } else {  // E −= X̃ᵀ(X̃ − X): the backends subtract, they do not add
      Backend::subtract(x, MatrixView<const float>(xf.matrix()), xf.matrix());
      Backend::cross_gram(x, MatrixView<const float>(xf.matrix()), make_row_major(grown(part, k * k), k, k));
      const auto e = make_row_major(cross.at(slot).data(), k, k);
      Backend::subtract(MatrixView<const float>(e), make_row_major<const float>(part.data(), k, k), e);
    }
  }
}

/// The folds of `res` applied to the products of add_cross_products: a group's inputs become
/// X · S⁻¹ (search_block), so its slot's E becomes S⁻¹ · E · S⁻¹.
template <class Backend, class Arch>
void fold_cross(const ModelConfig& c, const BlockResult& res, std::map<int, typename Backend::template buffer<float>>& cross) {
  for (const auto& g : Arch::groups(c)) {
    const auto it = cross.find(g.input);
    if (it == cross.end()) continue;
    const std::vector<float>& s = res.scales.at(g.name).scales;
    const auto k = static_cast<index_t>(s.size());
    detail::require(it->second.size() == static_cast<std::size_t>(k * k), "awq::model::fold_cross: ", s.size(), " scales of group '",
                    g.name, "' for a cross product of ", it->second.size(), " values");
    const auto e = make_row_major(it->second.data(), k, k);
    Backend::scale_rows(e, s, true);
    Backend::scale_cols(e, s, true);
  }
}

/// \brief finalize_block with GPTQ's error feedback (awq/gptq.hpp): the Hessian XᵀX of each
///        captured input `in` (as search_block left it: scaled), its factor and the feedback, all
///        where the block lives (Finalize<Backend>). With `cross` (add_cross_products, folded
///        alike by fold_cross) and `fp_target` > 0, each weight's target first moves that share of
///        the way to the full-precision model's output (retarget_linear).
template <class Backend, class Arch>
std::map<std::string, QuantizedLinear> finalize_block_gptq(const ModelConfig& c, Block<Backend>& blk,
                                                           const std::vector<Tensor<Backend>>& in, const QuantSpec& spec,
                                                           const GptqOptions& opt,
                                                           const std::map<int, typename Backend::template buffer<float>>* cross = nullptr,
                                                           double fp_target = 0) {
  constexpr const char* fn = "awq::model::finalize_block_gptq";
  using Buf = typename Backend::template buffer<float>;
  const auto inputs = linear_inputs<Arch>(c);
  std::map<int, typename Finalize<Backend>::Factor> factors;
  std::map<std::string, QuantizedLinear> out;
  for (const auto& l : Arch::linears(c)) {
    const int slot = inputs.at(l);
    if (!factors.count(slot)) {
      detail::require(slot >= 0 && static_cast<std::size_t>(slot) < in.size(), fn, ": input slot ", slot, " of '", l,
                      "' was not captured (", in.size(), " inputs)");
      const Tensor<Backend>& x = in[static_cast<std::size_t>(slot)];
      Buf h(static_cast<std::size_t>(x.cols * x.cols));
      Backend::gram(MatrixView<const float>(x.matrix()), make_row_major(h.data(), x.cols, x.cols));
      try {
        factors.emplace(slot, Finalize<Backend>::factor(make_row_major<const float>(h.data(), x.cols, x.cols), opt.damp));
      } catch (const NotPositiveDefinite&) {  // say which linear, and what to change
        throw NotPositiveDefinite(detail::concat(fn, ": the Hessian of the input of '", l, "' (", x.cols, " channels, ", x.rows,
                                                 " tokens) is not positive definite at damp ", opt.damp, "; a larger damp makes it so"));
      }
    }
    const auto w = blk.at(l + ".weight").matrix();
    if (cross && fp_target > 0) {
      const auto e = cross->find(slot);
      detail::require(e != cross->end() && e->second.size() == static_cast<std::size_t>(w.cols() * w.cols()), fn, ": no ", w.cols(), "x",
                      w.cols(), " cross product for input slot ", slot, " of '", l, "'");
      Finalize<Backend>::retarget(w, factors.at(slot), make_row_major<const float>(e->second.data(), w.cols(), w.cols()), fp_target);
    }
    try {
      out[l] = Finalize<Backend>::gptq(w, spec, factors.at(slot), opt);
    } catch (const Error& e) {  // say which linear
      throw Error(detail::concat(fn, ": '", l, "': ", e.what()));
    }
    require_finite_scales(l, out[l]);
  }
  return out;
}

/// \brief What an activation stream is carried through: the original weights, their RTN
///        quantization, or the AWQ result.
enum class StreamKind { fp, rtn, awq };

/// \brief Activations carried through the blocks alongside the calibration (evaluation tokens).
struct Stream {
  StreamKind kind = StreamKind::fp;  ///< which weights
  Batch batch;                       ///< token layout
  std::vector<float> hidden;         ///< [tokens, hidden] on the host: the input, then the last block's output
};

/// \brief One block's result as handed to the sink, on the host.
struct QuantizedBlock {
  int index = 0;                                        ///< block number
  std::string prefix;                                   ///< Hugging Face name prefix, "model.layers.3."
  std::map<std::string, QuantizedLinear> linears;       ///< by relative name ("self_attn.q_proj")
  std::map<std::string, std::vector<float>> tensors;    ///< the other tensors after folding (norms, biases)
  std::map<std::string, std::vector<std::int64_t>> shapes;  ///< their shapes
  BlockResult result;                                   ///< the searches' choices
  bool resumed = false;                                 ///< taken from a checkpoint
};

/// \brief Options of quantize_model.
struct PipelineOptions {
  BlockOptions block{};                        ///< the per-block flow
  const BlockCheckpoint* checkpoint = nullptr;  ///< per-block resume, or none
  int layers = -1;                             ///< the first N blocks only (-1: all)
  ProgressCallback progress{};                 ///< per block ("AWQ blocks") and per phase
  index_t stream_chunk_tokens = 4096;          ///< streams go through a block this many tokens at a time
  /// Carry the RTN and AWQ streams through the backend's quantized-weight kernels
  /// (KernelLinear<Backend>) where it has them, instead of the dequantized fp32 weights: what an
  /// engine running the checkpoint computes (on the GPU: fp16 activations, the W4A16 kernels).
  bool kernel_eval = false;
  /// Read the next block from the source and run the sink on threads of their own while the
  /// current block computes: the source and the sink are each used by one thread at a time, the
  /// sink in block order, and results do not change. Off: everything on the calling thread.
  bool overlap_io = true;
};

/// \brief Summary of a quantize_model run.
struct PipelineResult {
  int blocks = 0;   ///< blocks quantized
  int resumed = 0;  ///< of which taken from checkpoints
  /// Wall seconds per phase, summed over the blocks: "load" (source → backend), "carry" (the
  /// streams, with the RTN stream's quantization), "capture" (the calibration forwards, and
  /// SearchMode::fp_target's cross products), "search" (scales, folds, clip), "finalize"
  /// (quantization), "sink". With overlap_io, "load" and "sink"
  /// are the waits for the reading and sinking threads plus the upload and the download.
  std::map<std::string, double> seconds;
};

/// Reads block `layer`'s tensors from `src` into host memory, in Arch::block_tensors order;
/// optional tensors (biases) are those the architecture lists for this config.
template <class Arch, class Source>
std::vector<std::vector<float>> read_block(const Source& src, const ModelConfig& c, int layer) {
  std::vector<std::vector<float>> out;
  const std::string p = Arch::block_prefix(layer);
  for (const auto& t : Arch::block_tensors(c)) out.push_back(src.load(p + t.name, t.shape));
  return out;
}

/// Moves tensors read by read_block into the backend's memory.
template <class Backend, class Arch>
Block<Backend> put_block(const ModelConfig& c, const std::vector<std::vector<float>>& host) {
  Block<Backend> blk;
  const auto tensors = Arch::block_tensors(c);
  for (std::size_t i = 0; i < tensors.size(); ++i) blk.put(tensors[i].name, tensors[i].shape, host[i]);
  return blk;
}

/// Loads block `layer`'s tensors from `src` into the backend's memory.
template <class Backend, class Arch, class Source>
Block<Backend> load_block(const Source& src, const ModelConfig& c, int layer) {
  return put_block<Backend, Arch>(c, read_block<Arch>(src, c, layer));
}

/// \brief Quantizes the model of `src` block by block.
/// \tparam Backend backend::cpu or backend::cuda (the latter through awq/model/arch/*.cuh)
/// \tparam Arch    an architecture policy (awq/model/arch.hpp)
/// \tparam Source  a weight source (awq/model/source.hpp)
/// \param src      the model's weights, read one block at a time
/// \param calib    calibration layout
/// \param calib_hidden the calibration tokens' embeddings [tokens, hidden] (host)
/// \param streams  activations carried along; on return each holds the last block's output
/// \param opt      per-block options, checkpoint, layer count, progress
/// \param sink     called as sink(const QuantizedBlock&) after each block, in block order and one
///                 call at a time; with opt.overlap_io on a thread of its own while the next block
///                 computes (an exception it throws ends the run at the next block)
template <class Backend, class Arch, class Source, class Sink>
PipelineResult quantize_model(const Source& src, const Batch& calib, const std::vector<float>& calib_hidden,
                              std::vector<Stream>& streams, const PipelineOptions& opt, Sink&& sink) {
  constexpr const char* fn = "awq::model::quantize_model";
  const ModelConfig& c = src.config();
  Arch::check(c);
  detail::require(c.layers >= 1, fn, ": the model has ", c.layers, " layers");
  check_description<Arch>(c, opt.block.quant);
  const index_t H = c.hidden;
  detail::require(calib.n_seq >= 1 && calib.seq_len >= 1, fn, ": the calibration batch is ", calib.n_seq, " sequences of ",
                  calib.seq_len, " tokens");
  detail::require(static_cast<index_t>(calib_hidden.size()) == calib.tokens() * H, fn, ": calibration hidden states hold ",
                  calib_hidden.size(), " values, expected ", calib.tokens(), " x ", H);
  for (std::size_t i = 0; i < streams.size(); ++i) {
    const Batch& sb = streams[i].batch;
    detail::require(sb.n_seq >= 1 && sb.seq_len >= 1, fn, ": stream ", i, " is ", sb.n_seq, " sequences of ", sb.seq_len, " tokens");
    detail::require(static_cast<index_t>(streams[i].hidden.size()) == sb.tokens() * H, fn, ": stream ", i, " holds ",
                    streams[i].hidden.size(), " values, expected ", sb.tokens(), " x ", H);
  }
  using Buf = typename Backend::template buffer<float>;
  const auto mat = [](Buf& b, index_t rows, index_t cols) { return make_row_major(b.data(), rows, cols); };
  Buf h = Backend::upload(calib_hidden.data(), calib_hidden.size()), next(calib_hidden.size());
  // With SearchMode::fp_target the calibration tokens also go through the full-precision blocks
  // (hf), whose inputs of each linear GPTQ's target moves towards.
  const bool retarget = opt.block.mode.retargets();
  detail::require(opt.block.mode.fp_target == 0 || retarget, "awq::model::quantize_model: fp_target ", opt.block.mode.fp_target,
                  " needs sequential calibration and a gptq rounding (mode ", opt.block.mode.variants(), ")");
  detail::require(opt.block.mode.fp_target >= 0 && opt.block.mode.fp_target <= 1, "awq::model::quantize_model: fp_target ",
                  opt.block.mode.fp_target, " is out of range (accepted: 0 <= fp_target <= 1)");
  Buf hf = retarget ? Backend::upload(calib_hidden.data(), calib_hidden.size()) : Buf(),
      next_f(retarget ? calib_hidden.size() : 0);
  // Streams are carried a few sequences at a time (rows are independent across sequences), so
  // their intermediates stay small; one scratch buffer serves all of them.
  std::vector<Buf> sh;
  for (const auto& s : streams) sh.push_back(Backend::upload(s.hidden.data(), s.hidden.size()));
  Buf scratch;
  const auto carry = [&](StreamKind kind, const Block<Backend>& blk) {
    for (std::size_t i = 0; i < streams.size(); ++i) {
      if (streams[i].kind != kind) continue;
      const Batch& sb = streams[i].batch;
      if (scratch.size() < sh[i].size()) scratch = Buf(sh[i].size());
      const int per = std::max(1, static_cast<int>(opt.stream_chunk_tokens / std::max(1, sb.seq_len)));
      for (int s0 = 0; s0 < sb.n_seq; s0 += per) {
        const Batch cb{std::min(per, sb.n_seq - s0), sb.seq_len};
        const index_t r0 = static_cast<index_t>(s0) * sb.seq_len;
        Arch::template forward<Backend>(c, cb, blk, make_row_major<const float>(sh[i].data() + r0 * H, cb.tokens(), H),
                                        make_row_major(scratch.data() + r0 * H, cb.tokens(), H), nullptr);
      }
      std::swap(sh[i], scratch);
    }
  };
  const auto has = [&](StreamKind k) {
    for (const auto& s : streams)
      if (s.kind == k) return true;
    return false;
  };

  const auto attach_kernels = [&](Block<Backend>& b, const std::map<std::string, QuantizedLinear>& q) {
    if (!opt.kernel_eval) return;
    for (const auto& [name, ql] : q) {
      const std::string bn = name + ".bias";
      b.set_linear(name, KernelLinear<Backend>::make(ql, opt.block.quant, b.contains(bn) ? b.at(bn).data.data() : nullptr));
    }
  };

  PipelineResult result;
  const int n = opt.layers >= 0 ? std::min(opt.layers, c.layers) : c.layers;
  detail::ProgressTracker tracker(opt.progress, "AWQ " + opt.block.quant.name() + " blocks", n);
  // Phase timings wait for the backend at each boundary, so a phase is charged with its own work.
  using Clock = std::chrono::steady_clock;
  auto t_mark = Clock::now();
  const auto lap = [&](const char* phase) {
    Backend::synchronize();
    const auto now = Clock::now();
    result.seconds[phase] += std::chrono::duration<double>(now - t_mark).count();
    t_mark = now;
  };
  // With overlap_io, block li + 1 is read while block li computes, and block li's sink runs
  // while block li + 1 computes, each on a worker thread of its own; the workers are declared
  // after everything their tasks use, so on every exit path they finish before it goes.
  const auto read = [&src, &c](int li) { return [&src, &c, li] { return read_block<Arch>(src, c, li); }; };
  detail::SerialWorker reader(opt.overlap_io), sinker(opt.overlap_io);
  std::future<std::vector<std::vector<float>>> reading;
  if (n > 0) reading = reader.submit(read(0));
  std::future<void> sinking;
  for (int li = 0; li < n; ++li) {
    Block<Backend> blk = put_block<Backend, Arch>(c, reading.get());
    if (li + 1 < n) reading = reader.submit(read(li + 1));
    lap("load");
    carry(StreamKind::fp, blk);
    if (has(StreamKind::rtn)) {
      Block<Backend> rtn = blk.clone();
      attach_kernels(rtn, finalize_block<Backend, Arch>(c, rtn, opt.block.quant));
      carry(StreamKind::rtn, rtn);
    }
    lap("carry");
    // The capture forward's output is the next block's input (the full-precision one, as the
    // reference), unless the mode is sequential: then the quantized block's, computed below, and
    // the capture skips what only the output needs.
    std::vector<Tensor<Backend>> in;
    std::map<int, Buf> cross;  // with fp_target: E = X̃ᵀ(X − X̃) per input slot
    if (opt.block.mode.sequential)
      capture_inputs<Arch>(c, calib, blk, mat(h, calib.tokens(), H), mat(next, calib.tokens(), H), in);
    else
      Arch::template forward<Backend>(c, calib, blk, mat(h, calib.tokens(), H), mat(next, calib.tokens(), H), &in);
    check_capture<Arch>(c, calib.tokens(), in);
    if (retarget) {  // the full-precision block a few sequences at a time: its inputs live for one chunk
      const int per = std::max(1, static_cast<int>(opt.stream_chunk_tokens / std::max(1, calib.seq_len)));
      for (int s0 = 0; s0 < calib.n_seq; s0 += per) {
        const Batch cb{std::min(per, calib.n_seq - s0), calib.seq_len};
        const index_t r0 = static_cast<index_t>(s0) * calib.seq_len;
        std::vector<Tensor<Backend>> fp_in;
        Arch::template forward<Backend>(c, cb, blk, make_row_major<const float>(hf.data() + r0 * H, cb.tokens(), H),
                                        make_row_major(next_f.data() + r0 * H, cb.tokens(), H), &fp_in);
        add_cross_products<Backend, Arch>(c, in, r0, fp_in, cross);
      }
    }
    lap("capture");
    QuantizedBlock qb;
    qb.index = li;
    qb.prefix = Arch::block_prefix(li);
    GivenResults given;
    qb.resumed = opt.checkpoint && opt.checkpoint->has(li);
    if (qb.resumed) {
      std::vector<std::pair<std::string, std::size_t>> ns, nc;
      for (const auto& g : Arch::groups(c))
        ns.emplace_back(g.name, static_cast<std::size_t>(blk.at(g.linears.front() + ".weight").cols));
      if (opt.block.clip)
        for (const auto& t : Arch::clip_targets(c)) {
          const auto& w = blk.at(t.linear + ".weight");
          nc.emplace_back(t.name, static_cast<std::size_t>(w.rows * (w.cols / opt.block.quant.group_for(w.cols))));
        }
      given = opt.checkpoint->load(li, ns, nc);
      ++result.resumed;
    }
    qb.result = search_block<Backend, Arch>(c, calib, blk, in, opt.block, qb.resumed ? &given : nullptr);
    lap("search");
    // The previous block's sink has had this block's compute to finish in; a failure there
    // stops the run before this block's checkpoint is saved.
    if (sinking.valid()) sinking.get();
    lap("sink");
    if (opt.checkpoint && !qb.resumed) opt.checkpoint->save(li, qb.result);
    if (opt.block.mode.rounding == SearchMode::Rounding::nearest) {
      qb.linears = finalize_block<Backend, Arch>(c, blk, opt.block.quant);
    } else {
      GptqOptions go;
      go.groups = opt.block.mode.gptq_groups();
      go.damp = opt.block.mode.damp_for(opt.block.quant.bits);
      if (retarget) fold_cross<Backend, Arch>(c, qb.result, cross);  // the folds search_block applied to `in`
      qb.linears = finalize_block_gptq<Backend, Arch>(c, blk, in, opt.block.quant, go, retarget ? &cross : nullptr, opt.block.mode.fp_target);
    }
    in.clear();
    cross.clear();
    lap("finalize");
    if (opt.block.mode.sequential) {  // before any kernel op: the calibration path never depends on kernel_eval
      Arch::template forward<Backend>(c, calib, blk, mat(h, calib.tokens(), H), mat(next, calib.tokens(), H), nullptr);
      lap("capture");
    }
    if (has(StreamKind::awq)) attach_kernels(blk, qb.linears);
    carry(StreamKind::awq, blk);
    lap("carry");
    for (const auto& t : Arch::block_tensors(c)) {
      const std::string lin = t.name.substr(0, t.name.rfind('.'));
      if (qb.linears.count(lin) && t.name == lin + ".weight") continue;
      qb.tensors[t.name] = blk.host(t.name);
      qb.shapes[t.name] = t.shape;
    }
    sinking = sinker.submit([&sink, q = std::move(qb)] { sink(static_cast<const QuantizedBlock&>(q)); });
    if (!opt.overlap_io) sinking.get();
    lap("sink");
    std::swap(h, next);
    if (retarget) std::swap(hf, next_f);
    ++result.blocks;
    tracker.step(li + 1);
  }
  if (sinking.valid()) sinking.get();
  lap("sink");
  for (std::size_t i = 0; i < streams.size(); ++i) Backend::download(sh[i].data(), streams[i].hidden.size(), streams[i].hidden.data());
  return result;
}

}  // namespace awq::model
