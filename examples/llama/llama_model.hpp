// The example engine's Llama model: loading from GGUF (dequantized to fp32, llama.cpp's q/k
// row permutation undone to the Hugging Face layout), the batched forward pass, perplexity,
// and the model-level RTN and AWQ passes.
#pragma once

#include <awq/awq.hpp>
#include <awq/io/gguf.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "llama/llama_block.hpp"

namespace awq_example {

struct LlamaModel {
  LlamaConfig cfg;
  int vocab = 0;
  Mat embed;  // [vocab, hidden], also the output projection (tied)
  Vec final_norm;
  std::vector<LlamaLayer> layers;
};

/// Undo llama.cpp's convert permutation of q/k rows: per head, GGUF row 2j+i holds HF row i*D/2+j.
inline Mat unpermute_rows(const Mat& w, int heads) {
  const Eigen::Index d = w.rows() / heads, half = d / 2;
  Mat out(w.rows(), w.cols());
  for (int h = 0; h < heads; ++h)
    for (Eigen::Index i = 0; i < 2; ++i)
      for (Eigen::Index j = 0; j < half; ++j) out.row(h * d + i * half + j) = w.row(h * d + 2 * j + i);
  return out;
}

inline Mat gguf_matrix(const awq::io::GgufFile& g, const std::string& name, Eigen::Index rows, Eigen::Index cols) {
  const auto& t = g.tensor(name);
  awq::detail::require(t.dims.size() == 2 && static_cast<Eigen::Index>(t.dims[0]) == cols && static_cast<Eigen::Index>(t.dims[1]) == rows,
                       "load_llama: tensor '", name, "' has an unexpected shape");
  const auto v = g.dequantize(name);
  return Eigen::Map<const Mat>(v.data(), rows, cols);
}

inline Vec gguf_vector(const awq::io::GgufFile& g, const std::string& name, Eigen::Index n) {
  const auto v = g.dequantize(name);
  awq::detail::require(static_cast<Eigen::Index>(v.size()) == n, "load_llama: tensor '", name, "' has ", v.size(), " elements, expected ", n);
  return Eigen::Map<const Vec>(v.data(), n);
}

/// Loads a llama-architecture GGUF; hyper-parameters come from the file's metadata.
inline LlamaModel load_llama(const awq::io::GgufFile& g, int max_layers = -1) {
  awq::detail::require(g.get_string("general.architecture") == "llama", "load_llama: architecture is '",
                       g.get_string("general.architecture"), "', not llama");
  LlamaModel m;
  m.cfg.hidden = static_cast<int>(g.get_int("llama.embedding_length"));
  m.cfg.intermediate = static_cast<int>(g.get_int("llama.feed_forward_length"));
  m.cfg.n_heads = static_cast<int>(g.get_int("llama.attention.head_count"));
  m.cfg.n_kv_heads = static_cast<int>(g.has("llama.attention.head_count_kv") ? g.get_int("llama.attention.head_count_kv") : m.cfg.n_heads);
  m.cfg.head_dim = m.cfg.hidden / m.cfg.n_heads;
  m.cfg.rms_eps = static_cast<float>(g.get_float("llama.attention.layer_norm_rms_epsilon"));
  m.cfg.rope_theta = static_cast<float>(g.has("llama.rope.freq_base") ? g.get_float("llama.rope.freq_base") : 10000.0);
  const auto& emb = g.tensor("token_embd.weight");
  m.vocab = static_cast<int>(emb.dims[1]);
  const int H = m.cfg.hidden, I = m.cfg.intermediate, D = m.cfg.head_dim;
  m.embed = gguf_matrix(g, "token_embd.weight", m.vocab, H);
  m.final_norm = gguf_vector(g, "output_norm.weight", H);
  for (const auto& t : g.tensors())
    awq::detail::require(t.name != "output.weight", "load_llama: a separate output.weight is not supported (tied embeddings expected)");
  int n_layers = static_cast<int>(g.get_int("llama.block_count"));
  if (max_layers >= 0) n_layers = std::min(n_layers, max_layers);
  for (int i = 0; i < n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LlamaLayer l;
    l.wq = unpermute_rows(gguf_matrix(g, p + "attn_q.weight", m.cfg.n_heads * D, H), m.cfg.n_heads);
    l.wk = unpermute_rows(gguf_matrix(g, p + "attn_k.weight", m.cfg.n_kv_heads * D, H), m.cfg.n_kv_heads);
    l.wv = gguf_matrix(g, p + "attn_v.weight", m.cfg.n_kv_heads * D, H);
    l.wo = gguf_matrix(g, p + "attn_output.weight", H, m.cfg.n_heads * D);
    l.wg = gguf_matrix(g, p + "ffn_gate.weight", I, H);
    l.wu = gguf_matrix(g, p + "ffn_up.weight", I, H);
    l.wd = gguf_matrix(g, p + "ffn_down.weight", H, I);
    l.ln_in = gguf_vector(g, p + "attn_norm.weight", H);
    l.ln_post = gguf_vector(g, p + "ffn_norm.weight", H);
    m.layers.push_back(std::move(l));
  }
  return m;
}

inline Mat embed_tokens(const LlamaModel& m, const std::vector<int>& tokens) {
  Mat h(static_cast<Eigen::Index>(tokens.size()), m.cfg.hidden);
  for (std::size_t t = 0; t < tokens.size(); ++t) h.row(static_cast<Eigen::Index>(t)) = m.embed.row(tokens[t]);
  return h;
}

/// Mean negative log-likelihood of next tokens, per sequence of b.seq_len, and its exp.
struct PerplexityResult {
  double nll = 0;
  double ppl = 0;
  long predicted = 0;
};

inline PerplexityResult perplexity(const LlamaModel& m, const std::vector<int>& tokens, int seq_len) {
  const int n_seq = static_cast<int>(tokens.size()) / seq_len;
  awq::detail::require(n_seq > 0, "perplexity: fewer than ", seq_len, " tokens");
  const std::vector<int> used(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(n_seq) * seq_len);
  const Batch b{n_seq, seq_len};
  Mat h = embed_tokens(m, used);
  for (const auto& l : m.layers) h = layer_forward(m.cfg, b, l, h);
  h = rmsnorm(h, m.final_norm, m.cfg.rms_eps);
  PerplexityResult r;
  const Eigen::Index chunk = 256;
  std::vector<double> nll_row(static_cast<std::size_t>(h.rows()), 0.0);
  Mat logits;
  for (Eigen::Index t0 = 0; t0 < h.rows(); t0 += chunk) {
    const Eigen::Index nt = std::min(chunk, h.rows() - t0);
    logits.resize(nt, m.vocab);
    awq::backend::cpu::linear<float>(awq::MatrixView<const float>(h.data() + t0 * h.cols(), nt, h.cols(), h.cols(), 1), cv(m.embed), nullptr,
                                     awq::as_view(logits));
    awq::backend::cpu::parallel_for(nt, [&](awq::index_t a, awq::index_t e) {
      for (awq::index_t i = a; i < e; ++i) {
        const Eigen::Index t = t0 + i;
        if ((t % seq_len) == seq_len - 1) continue;  // last position of a sequence predicts nothing here
        const float mx = logits.row(i).maxCoeff();
        double sum = 0;
        for (Eigen::Index v = 0; v < logits.cols(); ++v) sum += std::exp(static_cast<double>(logits(i, v) - mx));
        nll_row[static_cast<std::size_t>(t)] = -(static_cast<double>(logits(i, used[static_cast<std::size_t>(t + 1)]) - mx) - std::log(sum));
      }
    });
  }
  for (double v : nll_row) r.nll += v;
  r.predicted = static_cast<long>(n_seq) * (seq_len - 1);
  r.nll /= static_cast<double>(r.predicted);
  r.ppl = std::exp(r.nll);
  return r;
}

}  // namespace awq_example
