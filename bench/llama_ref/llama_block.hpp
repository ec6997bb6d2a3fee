// The types of the pre-driver GPU per-block flow (llama_cuda.cuh), kept only for
// bench_search_cuda's fp16-storage measurements until awq::model gains fp16 block storage.
#pragma once

#include <awq/awq.hpp>
#include <awq/model/arch/llama.hpp>

#include <map>
#include <string>
#include <vector>

namespace awq_example {

using awq::model::rope_cos_sin;

struct LlamaConfig {
  int hidden = 0, intermediate = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float rms_eps = 1e-6f;
  float rope_theta = 10000.0f;
};

/// n_seq sequences of seq_len tokens, the rows of every activation matrix.
struct Batch {
  int n_seq = 1, seq_len = 0;
  int tokens() const { return n_seq * seq_len; }
};

struct BlockAwqOptions {
  awq::QuantSpec quant{4, 128, true};
  bool duo_scaling = false;
  bool clip = true;
  int search_seqs = 0;
  awq::ProgressCallback progress{};
  std::map<std::string, std::vector<float>> given_scales{};
  std::map<std::string, std::vector<float>> given_clips{};
};

/// A clip result from given bounds, for w [rows, ·].
inline awq::ClipSearchResult<float> given_clip(const std::vector<float>& bounds, awq::index_t rows) {
  awq::detail::require(rows > 0 && bounds.size() % static_cast<std::size_t>(rows) == 0, "given clip bounds: ", bounds.size(),
                       " values for ", rows, " rows");
  awq::ClipSearchResult<float> c;
  c.rows = rows;
  c.groups = static_cast<awq::index_t>(bounds.size()) / rows;
  c.max_val = bounds;
  c.shrink_index.assign(bounds.size(), -1);
  return c;
}

}  // namespace awq_example
