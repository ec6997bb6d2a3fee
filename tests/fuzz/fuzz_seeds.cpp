// Writes the seed corpora of the fuzz targets into <out>/{safetensors,gguf,awq_checkpoint}: the
// files below, and one file per structural rule of each format (tests/malformed_files.hpp).
// With the real model (argument 2, the GGUF fetched at set-up) the seeds are made from it: a
// checkpoint of a real weight slice quantized and packed by the example engine's exporter (the
// AutoAWQ GEMM layout), a small GGUF with the real file's metadata values and tokens, and the
// real file's first 64 KiB.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "awq/awq.hpp"
#include "awq/io/gguf.hpp"
#include "awq/io/safetensors.hpp"
#include "gguf_writer.hpp"
#include "malformed_files.hpp"
#include "llama/export.hpp"

namespace fs = std::filesystem;

namespace {

void write_bytes(const fs::path& p, const std::vector<std::uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A weight [rows, cols] from the real model when there is one, else random normal.
Mat weight_slice(const awq::io::GgufFile* g, long rows, long cols) {
  Mat w(rows, cols);
  if (g) {
    const auto& t = g->tensor("blk.0.attn_q.weight");
    const auto full = g->dequantize(t.name);
    const long in = static_cast<long>(t.dims[0]);
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) w(r, c) = full[static_cast<std::size_t>(r * in + c)];
  } else {
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 0.05f);
    for (long i = 0; i < w.size(); ++i) w.data()[i] = d(rng);
  }
  return w;
}

// A 4-bit g32 checkpoint of one linear plus an unquantized norm, written as the exporter does.
void write_checkpoint(const std::string& path, Mat w) {
  awq::io::SafetensorsWriter st;
  st.metadata("format", "pt");
  const awq::QuantSpec spec{4, 32, true};
  awq::model::write_linear(st, "model.layers.0.self_attn.q_proj", awq::model::finalize_linear(awq::as_view(w), spec));
  st.add_typed("model.layers.0.input_layernorm.weight", "F16", {w.cols()},
               std::vector<Eigen::half>(static_cast<std::size_t>(w.cols()), Eigen::half(1.0f)));
  st.write(path);
}

// A GGUF v3 with a few metadata values and tokens (copied from the real file when there is one)
// and three small tensors: F32, F16 and Q4_1.
std::vector<std::uint8_t> small_gguf(const awq::io::GgufFile* g) {
  awq_test::GgufWriter w;
  w.header(3, 3, 5);  // version 3, 3 tensors, 5 keys
  w.str("general.architecture");
  w.put<std::uint32_t>(8);
  w.str(g ? g->get_string("general.architecture") : "llama");
  w.str("llama.block_count");
  w.put<std::uint32_t>(4);
  w.put<std::uint32_t>(g ? static_cast<std::uint32_t>(g->get_int("llama.block_count")) : 30);
  w.str("llama.rope.freq_base");
  w.put<std::uint32_t>(6);
  w.put<float>(g ? static_cast<float>(g->get_float("llama.rope.freq_base")) : 10000.0f);
  w.str("general.alignment");
  w.put<std::uint32_t>(4);
  w.put<std::uint32_t>(32);
  w.str("tokenizer.ggml.tokens");
  w.put<std::uint32_t>(9);
  w.put<std::uint32_t>(8);
  w.put<std::uint64_t>(4);
  for (int i = 0; i < 4; ++i) w.str(g ? g->value("tokenizer.ggml.tokens").strs.at(static_cast<std::size_t>(i)) : "t" + std::to_string(i));
  w.tensor_info("norm", {8}, 0, 0);        // F32
  w.tensor_info("half", {4, 2}, 1, 32);    // F16
  w.tensor_info("q41", {32, 2}, 3, 64);    // Q4_1
  w.align(32);
  for (int i = 0; i < 8; ++i) w.put<float>(1.0f + 0.125f * static_cast<float>(i));  // 32 bytes
  for (int i = 0; i < 8; ++i) w.put<std::uint16_t>(0x3C00);                           // 16 bytes of F16 1.0
  w.align(32);
  std::vector<std::uint8_t> q41(40, 0x37);  // 2 Q4_1 blocks of 20 bytes
  w.b.insert(w.b.end(), q41.begin(), q41.end());
  return w.b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fuzz_seeds OUT_DIR [REAL.gguf]\n");
    return 2;
  }
  const fs::path out(argv[1]);
  for (const char* d : {"safetensors", "gguf", "awq_checkpoint"}) fs::create_directories(out / d);
  std::unique_ptr<awq::io::GgufFile> real;
  if (argc > 2 && fs::exists(argv[2])) real = std::make_unique<awq::io::GgufFile>(awq::io::GgufFile::open(argv[2]));

  const Mat w = weight_slice(real.get(), 64, 128);
  write_checkpoint((out / "awq_checkpoint" / "real_q_proj_64x128.safetensors").string(), w);
  write_checkpoint((out / "safetensors" / "real_q_proj_64x128.safetensors").string(), w);
  write_checkpoint((out / "awq_checkpoint" / "random_16x32.safetensors").string(), weight_slice(nullptr, 16, 32));

  awq::io::SafetensorsWriter st;
  st.metadata("format", "pt");
  st.add_typed("a", "F32", {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  st.add_typed("b", "BF16", {2}, std::vector<std::uint16_t>{0x3F80, 0x4000});
  st.add_typed("c", "U8", {0}, std::vector<std::uint8_t>{});
  st.write((out / "safetensors" / "mixed.safetensors").string());

  write_bytes(out / "gguf" / "small.gguf", small_gguf(real.get()));
  for (const auto& f : awq_test::malformed_files()) write_bytes(out / f.format / (f.name + "." + f.format), f.bytes);
  if (real) {
    std::ifstream f(argv[2], std::ios::binary);
    std::vector<std::uint8_t> head(64 * 1024);
    f.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    write_bytes(out / "gguf" / "real_first_64k.gguf", head);
  }
  std::printf("fuzz seeds written to %s (%s)\n", out.c_str(), real ? "from the real model" : "synthetic");
  return 0;
}
