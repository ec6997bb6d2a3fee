// GGUF reader: a file written here byte by byte (known values, every supported type),
// every truncation of it, malformed headers, and the real SmolLM2 file when set-up fetched it.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "awq/io/gguf.hpp"
#include "gguf_writer.hpp"

namespace {

using Writer = awq_test::GgufWriter;

std::uint16_t f16(float x) {  // exact for the small values used here
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const int exp = static_cast<int>((u >> 23) & 0xFF) - 127 + 15;
  return static_cast<std::uint16_t>(sign | (static_cast<std::uint32_t>(exp) << 10) | ((u >> 13) & 0x3FFu));
}

// A GGUF v3 file: metadata of several types; tensors a (F32 2x3), b (Q4_1 32), c (Q8_0 32), d (F16 4).
std::vector<std::uint8_t> make_file(std::size_t* data_start = nullptr) {
  Writer w;
  w.header(3, 4, 4);  // version 3, 4 tensors, 4 keys
  w.str("general.architecture"); w.put<std::uint32_t>(8); w.str("llama");
  w.str("llama.block_count"); w.put<std::uint32_t>(4); w.put<std::uint32_t>(30);
  w.str("llama.rope.freq_base"); w.put<std::uint32_t>(6); w.put<float>(100000.0f);
  w.str("tokenizer.ggml.tokens"); w.put<std::uint32_t>(9); w.put<std::uint32_t>(8); w.put<std::uint64_t>(2); w.str("a"); w.str("bc");
  std::uint64_t off = 0;
  auto info = [&](const std::string& n, std::vector<std::uint64_t> dims, std::uint32_t type, std::uint64_t bytes) {
    w.tensor_info(n, dims, type, off);
    off += (bytes + 31) / 32 * 32;
  };
  info("a", {3, 2}, 0, 24);
  info("b", {32}, 3, 20);
  info("c", {32}, 8, 34);
  info("d", {4}, 1, 8);
  w.align(32);
  if (data_start) *data_start = w.b.size();
  for (int i = 0; i < 6; ++i) w.put<float>(0.5f * static_cast<float>(i) - 1.0f);
  w.align(32);
  w.put<std::uint16_t>(f16(0.25f));   // Q4_1 d
  w.put<std::uint16_t>(f16(-1.0f));   // Q4_1 m
  for (int j = 0; j < 16; ++j) w.put<std::uint8_t>(static_cast<std::uint8_t>((j & 0xF) | ((15 - j) << 4)));
  w.align(32);
  w.put<std::uint16_t>(f16(0.5f));    // Q8_0 d
  for (int j = 0; j < 32; ++j) w.put<std::int8_t>(static_cast<std::int8_t>(j - 16));
  w.align(32);
  for (float v : {1.0f, -2.0f, 0.125f, 3.5f}) w.put<std::uint16_t>(f16(v));
  w.align(32);
  return w.b;
}

}  // namespace

TEST_CASE("gguf: metadata, tensor directory and dequantization of a hand-written file") {
  const auto g = awq::io::GgufFile::from_bytes(make_file(), "hand.gguf");
  CHECK(g.version() == 3);
  CHECK(g.get_string("general.architecture") == "llama");
  CHECK(g.get_int("llama.block_count") == 30);
  CHECK(g.get_float("llama.rope.freq_base") == 100000.0);
  CHECK(g.value("tokenizer.ggml.tokens").strs == std::vector<std::string>{"a", "bc"});
  REQUIRE(g.tensors().size() == 4);
  CHECK(g.tensor("a").dims == std::vector<std::uint64_t>{3, 2});
  const auto a = g.dequantize("a");
  CHECK(a == std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});
  const auto b = g.dequantize("b");  // x = d*q + m; element j: low nibble j, element j+16: high nibble 15-j
  for (int j = 0; j < 16; ++j) {
    CHECK(b[static_cast<std::size_t>(j)] == 0.25f * static_cast<float>(j) - 1.0f);
    CHECK(b[static_cast<std::size_t>(j + 16)] == 0.25f * static_cast<float>(15 - j) - 1.0f);
  }
  const auto c = g.dequantize("c");
  for (int j = 0; j < 32; ++j) CHECK(c[static_cast<std::size_t>(j)] == 0.5f * static_cast<float>(j - 16));
  CHECK(g.dequantize("d") == std::vector<float>{1.0f, -2.0f, 0.125f, 3.5f});
  CHECK_THROWS_WITH_AS(g.tensor("missing"), doctest::Contains("has no tensor 'missing'"), awq::Error);
  CHECK_THROWS_WITH_AS(g.value("missing.key"), doctest::Contains("no metadata key 'missing.key'"), awq::Error);
}

TEST_CASE("gguf: every truncation and malformed headers give awq::Error, never a crash") {
  std::size_t data_start = 0;
  const auto full = make_file(&data_start);
  long errors = 0;
  for (std::size_t n = 0; n + 1 < full.size(); ++n) {  // the final padding byte is not needed by any tensor
    std::vector<std::uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    const bool last_tensor_whole = n >= data_start + 3 * 32 + 8;
    try {
      (void)awq::io::GgufFile::from_bytes(cut, "cut.gguf");
      CHECK(last_tensor_whole);  // only a file holding every tensor's bytes may parse
    } catch (const awq::Error& e) {
      ++errors;
      CHECK(std::string(e.what()).find("cut.gguf") != std::string::npos);
    }
  }
  CHECK(errors > 100);

  auto patched = [&](std::size_t at, std::vector<std::uint8_t> bytes) {
    auto f = full;
    for (std::size_t i = 0; i < bytes.size(); ++i) f[at + i] = bytes[i];
    return f;
  };
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::from_bytes(patched(0, {'G', 'G', 'U', 'X'})), doctest::Contains("not a GGUF file"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::from_bytes(patched(4, {7, 0, 0, 0})), doctest::Contains("unsupported GGUF version 7"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::from_bytes(patched(8, {0, 0, 0, 0, 0, 0, 0, 1})), doctest::Contains("tensor count"), awq::Error);
  // first key length patched to 2^40: refused before allocating
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::from_bytes(patched(24, {0, 0, 0, 0, 0, 1, 0, 0})), doctest::Contains("exceeds 1 MiB"), awq::Error);
  // first value type (after the 8-byte length and 20-byte key) patched to 99
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::from_bytes(patched(24 + 8 + 20, {99, 0, 0, 0})), doctest::Contains("unknown value type 99"), awq::Error);
}

TEST_CASE("gguf: the real SmolLM2 file (fetched at set-up)") {
  const std::string path = AWQ_DATA_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(path)) {
    MESSAGE("skipped: " << path << " is absent (scripts/fetch_data.sh fetches it)");
    return;
  }
  const auto g = awq::io::GgufFile::open(path);
  CHECK(g.get_string("general.architecture") == "llama");
  CHECK(g.get_int("llama.block_count") == 30);
  CHECK(g.get_int("llama.embedding_length") == 576);
  CHECK(g.get_int("llama.feed_forward_length") == 1536);
  CHECK(g.get_int("llama.attention.head_count") == 9);
  CHECK(g.get_int("llama.attention.head_count_kv") == 3);
  CHECK(g.value("tokenizer.ggml.tokens").strs.size() == 49152);
  CHECK(g.tensors().size() == 272);
  const auto& t = g.tensor("blk.0.ffn_down.weight");
  CHECK(t.type == 3);  // Q4_1
  CHECK(t.dims == std::vector<std::uint64_t>{1536, 576});
  // Independent decode of the first block from the raw bytes.
  std::ifstream f(path, std::ios::binary);
  std::vector<char> all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::size_t data_start = 0;
  {  // data section = file size - (last offset + bytes), aligned; recompute from the largest tensor end
    std::uint64_t end = 0;
    for (const auto& x : g.tensors()) end = std::max(end, x.offset + x.n_bytes);
    data_start = all.size() - static_cast<std::size_t>(end);
    data_start -= data_start % 32;
  }
  const auto* blk = reinterpret_cast<const std::uint8_t*>(all.data()) + data_start + t.offset;
  auto half = [](const std::uint8_t* p) {
    const std::uint16_t h = static_cast<std::uint16_t>(p[0] | (p[1] << 8));
    const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
    const double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    return static_cast<float>((h & 0x8000) ? -v : v);
  };
  const float d = half(blk), m = half(blk + 2);
  const auto w = g.dequantize("blk.0.ffn_down.weight");
  for (int j = 0; j < 16; ++j) {
    CHECK(w[static_cast<std::size_t>(j)] == d * static_cast<float>(blk[4 + j] & 0xF) + m);
    CHECK(w[static_cast<std::size_t>(j + 16)] == d * static_cast<float>(blk[4 + j] >> 4) + m);
  }
}

#include <cstdio>
#include <filesystem>

#include "awq/io/safetensors.hpp"

TEST_CASE("safetensors: write, read back, and malformed files") {
  const auto dir = std::filesystem::temp_directory_path() / "awq_st_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "t.safetensors").string();
  awq::io::SafetensorsWriter w;
  w.metadata("format", "pt");
  w.add_typed("b", "F32", {2, 2}, std::vector<float>{1.0f, -2.0f, 3.5f, 0.25f});
  w.add_typed("a", "I32", {3}, std::vector<std::int32_t>{7, -1, 1 << 30});
  CHECK_THROWS_WITH_AS(w.add_typed("c", "F32", {3}, std::vector<float>{1.0f}), doctest::Contains("has 4 bytes but dtype F32"), awq::Error);
  CHECK_THROWS_WITH_AS(w.add_typed("a", "I32", {1}, std::vector<std::int32_t>{1}), doctest::Contains("added twice"), awq::Error);
  w.write(path);
  CHECK(!std::filesystem::exists(awq::io::atomic_temp(path)));
  const auto st = awq::io::SafetensorsFile::open(path);
  CHECK(st.names() == std::vector<std::string>{"a", "b"});
  CHECK(st.metadata().at("format") == "pt");
  const auto b = st.tensor("b");
  CHECK(b.dtype == "F32");
  CHECK(b.shape == std::vector<std::int64_t>{2, 2});
  float v[4];
  std::memcpy(v, b.data.data(), 16);
  CHECK(v[2] == 3.5f);
  CHECK_THROWS_WITH_AS(st.tensor("zz"), doctest::Contains("has no tensor 'zz'"), awq::Error);

  // Every truncation fails cleanly.
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  long errors = 0;
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    {
      std::ofstream out(path + ".cut", std::ios::binary);
      out.write(bytes.data(), static_cast<std::streamsize>(n));
    }
    try {
      (void)awq::io::SafetensorsFile::open(path + ".cut");
    } catch (const awq::Error&) {
      ++errors;
    }
  }
  CHECK(errors == static_cast<long>(bytes.size()));
  // A header that lies about a tensor's range.
  std::string bad = bytes;
  const auto pos = bad.find("[0,12]");
  REQUIRE(pos != std::string::npos);
  bad.replace(pos, 6, "[0,99]");
  {
    std::ofstream out(path + ".bad", std::ios::binary);
    out.write(bad.data(), static_cast<std::streamsize>(bad.size()));
  }
  CHECK_THROWS_WITH_AS(awq::io::SafetensorsFile::open(path + ".bad"), doctest::Contains("tensor 'a'"), awq::Error);
  std::filesystem::remove_all(dir);
}
