// Writes a tiny llama-architecture GGUF (2 blocks, hidden 64, a 256-token byte-level vocabulary, no
// merges, random F32 weights) for awq_llama's command-line tests: loads and runs in milliseconds.
//   tiny_llama_gguf OUT.gguf
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gguf_writer.hpp"

namespace {

// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the rest from U+0100 on.
std::string byte_symbol(int b) {
  auto printable = [](int c) { return (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255); };
  int cp = b;
  if (!printable(b)) {
    cp = 256;
    for (int c = 0; c < b; ++c) cp += printable(c) ? 0 : 1;
  }
  std::string s;
  if (cp < 0x80) s.push_back(static_cast<char>(cp));
  else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

struct Tensor {
  std::string name;
  std::vector<std::uint64_t> dims;  // innermost first
  std::vector<float> data;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tiny_llama_gguf OUT.gguf\n");
    return 2;
  }
  const std::uint32_t hidden = 64, ffn = 128, heads = 2, blocks = 2, context = 64, vocab = 256;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.08f);
  std::vector<Tensor> ts;
  auto add = [&](const std::string& name, std::vector<std::uint64_t> dims, bool ones) {
    std::uint64_t n = 1;
    for (auto d : dims) n *= d;
    std::vector<float> v(n);
    for (auto& x : v) x = ones ? 1.0f : nd(rng);
    ts.push_back({name, std::move(dims), std::move(v)});
  };
  add("token_embd.weight", {hidden, vocab}, false);
  add("output_norm.weight", {hidden}, true);
  for (std::uint32_t b = 0; b < blocks; ++b) {
    const std::string p = "blk." + std::to_string(b) + ".";
    for (const char* w : {"attn_q", "attn_k", "attn_v", "attn_output"}) add(p + w + ".weight", {hidden, hidden}, false);
    add(p + "ffn_gate.weight", {hidden, ffn}, false);
    add(p + "ffn_up.weight", {hidden, ffn}, false);
    add(p + "ffn_down.weight", {ffn, hidden}, false);
    add(p + "attn_norm.weight", {hidden}, true);
    add(p + "ffn_norm.weight", {hidden}, true);
  }

  awq_test::GgufWriter w;
  w.header(3, ts.size(), 12);
  auto key = [&](const std::string& k, std::uint32_t type) {
    w.str(k);
    w.put<std::uint32_t>(type);
  };
  key("general.architecture", 8), w.str("llama");
  key("llama.embedding_length", 4), w.put<std::uint32_t>(hidden);
  key("llama.feed_forward_length", 4), w.put<std::uint32_t>(ffn);
  key("llama.attention.head_count", 4), w.put<std::uint32_t>(heads);
  key("llama.attention.head_count_kv", 4), w.put<std::uint32_t>(heads);
  key("llama.attention.layer_norm_rms_epsilon", 6), w.put<float>(1e-5f);
  key("llama.rope.freq_base", 6), w.put<float>(10000.0f);
  key("llama.block_count", 4), w.put<std::uint32_t>(blocks);
  key("llama.context_length", 4), w.put<std::uint32_t>(context);
  key("tokenizer.ggml.model", 8), w.str("gpt2");
  key("tokenizer.ggml.tokens", 9), w.put<std::uint32_t>(8), w.put<std::uint64_t>(vocab);
  for (std::uint32_t b = 0; b < vocab; ++b) w.str(byte_symbol(static_cast<int>(b)));
  key("tokenizer.ggml.merges", 9), w.put<std::uint32_t>(8), w.put<std::uint64_t>(0);
  std::uint64_t offset = 0;
  for (const auto& t : ts) {
    w.tensor_info(t.name, t.dims, 0, offset);
    offset += (t.data.size() * 4 + 31) / 32 * 32;
  }
  w.align(32);
  for (const auto& t : ts) {
    for (float x : t.data) w.put<float>(x);
    w.align(32);
  }
  std::ofstream f(argv[1], std::ios::binary);
  f.write(reinterpret_cast<const char*>(w.b.data()), static_cast<std::streamsize>(w.b.size()));
  if (!f) {
    std::fprintf(stderr, "tiny_llama_gguf: cannot write %s\n", argv[1]);
    return 2;
  }
  return 0;
}
