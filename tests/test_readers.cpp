// Bad input for the safetensors and GGUF readers: one file per structural rule of each format
// (tests/malformed_files.hpp, also the fuzz seeds), each refused with an awq::Error naming the
// file and what broke the rule, from memory and from disk; directories with many tensors read in
// time linear in their size.
#include <doctest/doctest.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "awq/io/gguf.hpp"
#include "awq/io/safetensors.hpp"
#include "awq/model/source.hpp"
#include "fresh_rng.hpp"
#include "malformed_files.hpp"

namespace fs = std::filesystem;

namespace {

// Opens `bytes` as `format` from memory, or from a file under `path` when it is not empty.
void read_as(const std::string& format, const std::vector<std::uint8_t>& bytes, const std::string& name, const std::string& path) {
  if (!path.empty()) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (format == "gguf") (void)awq::io::GgufFile::open(path);
    else (void)awq::io::SafetensorsFile::open(path);
  } else if (format == "gguf") {
    (void)awq::io::GgufFile::from_bytes(bytes, name);
  } else {
    (void)awq::io::SafetensorsFile::from_bytes(bytes, name);
  }
}

}  // namespace

TEST_CASE("readers: every structural rule of safetensors and GGUF is enforced, from memory and from disk") {
  const fs::path dir = fs::temp_directory_path() / ("awq_readers_" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::create_directories(dir);
  int refused = 0, valid = 0;
  for (const auto& f : awq_test::malformed_files()) {
    for (const bool from_disk : {false, true}) {
      const std::string name = f.name + "." + f.format;
      const std::string path = from_disk ? (dir / name).string() : std::string();
      CAPTURE(name);
      CAPTURE(from_disk);
      if (f.fragment.empty()) {
        CHECK_NOTHROW(read_as(f.format, f.bytes, name, path));
        valid += !from_disk;
        continue;
      }
      try {
        read_as(f.format, f.bytes, name, path);
        FAIL_CHECK("accepted a malformed file");
      } catch (const awq::Error& e) {
        const std::string what = e.what();
        CAPTURE(what);
        CHECK(what.find(f.fragment) != std::string::npos);
        CHECK(what.find(from_disk ? path : name) != std::string::npos);
        refused += !from_disk;
      }
    }
  }
  CHECK(refused >= 90);
  CHECK(valid == 6);
  fs::remove_all(dir);
}

TEST_CASE("readers: what the valid edge cases hold") {
  for (const auto& f : awq_test::malformed_files()) {
    if (f.name == "st_ok_empty_tensors") {
      const auto s = awq::io::SafetensorsFile::from_bytes(f.bytes, f.name);
      CHECK(s.names() == std::vector<std::string>{"a", "b", "c"});
      CHECK(s.tensor("a").data.empty());
      CHECK(s.tensor("b").shape == std::vector<std::int64_t>{2, 0});
      CHECK(s.tensor("c").data == std::vector<std::uint8_t>{0x3C});
    } else if (f.name == "st_ok_padded_header") {
      const auto s = awq::io::SafetensorsFile::from_bytes(f.bytes, f.name);
      CHECK(s.metadata().at("format") == "pt");
      CHECK(s.tensor("a").data.size() == 2);  // 4 elements of 4 bits
    } else if (f.name == "gguf_ok_alignment_64_padded") {
      const auto g = awq::io::GgufFile::from_bytes(f.bytes, f.name);
      CHECK(g.alignment() == 64);
      CHECK(g.tensor("b").n_bytes == 16);
      CHECK(g.dequantize("a").size() == 16);
    }
  }
}

TEST_CASE("gguf: metadata arrays are bounded in total, not only one by one") {
  const auto b = awq_test::gguf_file(3, [](awq_test::GgufWriter& w) {
    for (const char* k : {"a", "b", "c"}) {  // three u8 arrays of 2^24 elements: 3 * 2^24 > 2^25
      w.str(k);
      w.put<std::uint32_t>(9);
      w.put<std::uint32_t>(0);
      w.put<std::uint64_t>(1u << 24);
      w.b.insert(w.b.end(), std::size_t{1} << 24, 7);
    }
  }, {}, 0);
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::from_bytes(b, "arrays.gguf"),
                       doctest::Contains("arrays.gguf: metadata 'c' array length 16777216 brings the file's array elements over 33554432"), awq::Error);
}

TEST_CASE("gguf: typed metadata getters refuse a value of another type") {
  const auto b = awq_test::gguf_file(2, [](awq_test::GgufWriter& w) {
    awq_test::kv_str(w, "general.architecture", "llama");
    awq_test::kv_u32(w, "llama.block_count", 30);
  }, {}, 0);
  const auto g = awq::io::GgufFile::from_bytes(b, "typed.gguf");
  CHECK(g.get_int("llama.block_count") == 30);
  CHECK(g.get_float("llama.block_count") == 30.0);
  CHECK_THROWS_WITH_AS(g.get_int("general.architecture"), doctest::Contains("typed.gguf: metadata 'general.architecture' has value type"), awq::Error);
  CHECK_THROWS_WITH_AS(g.get_float("general.architecture"), doctest::Contains("not a number"), awq::Error);
  CHECK_THROWS_WITH_AS(g.get_string("llama.block_count"), doctest::Contains("not a string"), awq::Error);
}

TEST_CASE("readers: 30 000 tensors read in linear time, with every tensor found by name") {
  const int n = 30000;
  std::string header = "{";
  for (int i = 0; i < n; ++i)
    header += (i ? ",\"t" : "\"t") + std::to_string(i) + "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[" + std::to_string(n - 1 - i) +
              "," + std::to_string(n - i) + "]}";
  header += "}";
  std::vector<awq_test::GgufTensorSpec> specs;
  for (int i = 0; i < n; ++i) specs.push_back({"t" + std::to_string(i), {1}, 0, static_cast<std::uint64_t>(n - 1 - i) * 32});
  const auto t0 = std::chrono::steady_clock::now();
  const auto s = awq::io::SafetensorsFile::from_bytes(awq_test::st_file(header, static_cast<std::size_t>(n)), "many.safetensors");
  const auto g = awq::io::GgufFile::from_bytes(awq_test::gguf_file(0, nullptr, specs, static_cast<std::size_t>(n - 1) * 32 + 4), "many.gguf");
  for (int i = 0; i < n; ++i) {
    REQUIRE(s.contains("t" + std::to_string(i)));
    REQUIRE(g.tensor("t" + std::to_string(i)).offset == static_cast<std::uint64_t>(n - 1 - i) * 32);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(s.names().size() == static_cast<std::size_t>(n));
  CHECK(seconds < 10.0);  // about 0.1 s in a release build; quadratic work would take minutes
}

#include <sys/stat.h>

#include "awq/io/mapped_file.hpp"

TEST_CASE("readers: files are mapped, views share the mapping, a file that shrank under it is refused") {
  const fs::path dir = fs::temp_directory_path() / ("awq_mmap_" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::create_directories(dir);
  const std::string st_path = (dir / "m.safetensors").string(), gg_path = (dir / "m.gguf").string();
  awq::io::SafetensorsWriter w;
  std::vector<float> big(1 << 16);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.5f - 3.0f;
  w.add_typed("a", "F32", {256, 256}, big);
  w.add_typed("b", "I32", {2}, std::vector<std::int32_t>{-7, 9});
  w.write(st_path);
  {
    std::vector<awq_test::GgufTensorSpec> specs{{"x", {1 << 16}, 0, 0}};
    auto b = awq_test::gguf_file(0, nullptr, specs, 0);
    const auto* p = reinterpret_cast<const std::uint8_t*>(big.data());
    b.insert(b.end(), p, p + big.size() * 4);
    std::ofstream(gg_path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }

  auto st = std::make_unique<awq::io::SafetensorsFile>(awq::io::SafetensorsFile::open(st_path));
  const auto copy = *st;  // shares the mapping
  const auto v = st->view("a");
  CHECK(v.dtype == "F32");
  CHECK(v.shape == std::vector<std::int64_t>{256, 256});
  REQUIRE(v.bytes.size == big.size() * 4);
  CHECK(std::memcmp(v.bytes.data, big.data(), v.bytes.size) == 0);
  CHECK(copy.view("a").bytes.data == v.bytes.data);
  CHECK(st->tensor("b").data == std::vector<std::uint8_t>(st->view("b").bytes.data, st->view("b").bytes.data + 8));
  st.reset();  // the copy keeps the mapping alive
  CHECK(std::memcmp(copy.view("a").bytes.data, big.data(), big.size() * 4) == 0);

  const auto g = awq::io::GgufFile::open(gg_path);
  const auto gb = g.bytes("x");
  REQUIRE(gb.size == big.size() * 4);
  CHECK(std::memcmp(gb.data, big.data(), gb.size) == 0);
  CHECK(g.dequantize("x") == big);

  // Truncated by someone else while mapped: refused before any view or copy is handed out.
  fs::resize_file(st_path, fs::file_size(st_path) / 2);
  fs::resize_file(gg_path, fs::file_size(gg_path) / 2);
  CHECK_THROWS_WITH_AS(copy.view("b"), doctest::Contains((st_path + " shrank from").c_str()), awq::Error);
  CHECK_THROWS_WITH_AS(copy.tensor("a"), doctest::Contains("while mapped"), awq::Error);
  CHECK_THROWS_WITH_AS(g.bytes("x"), doctest::Contains((gg_path + " shrank from").c_str()), awq::Error);
  CHECK_THROWS_WITH_AS(g.dequantize("x"), doctest::Contains("while mapped"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::io::SafetensorsFile::open(st_path), doctest::Contains("truncated"), awq::Error);

  // Paths that are not regular files, or not there.
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::open((dir / "none.gguf").string()), doctest::Contains(("cannot open " + (dir / "none.gguf").string()).c_str()), awq::Error);
  CHECK_THROWS_WITH_AS(awq::io::SafetensorsFile::open(dir.string()), doctest::Contains("is a directory"), awq::Error);
  const std::string fifo = (dir / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::open(fifo), doctest::Contains("is not a regular file"), awq::Error);
  std::ofstream(dir / "empty");
  CHECK_THROWS_WITH_AS(awq::io::GgufFile::open((dir / "empty").string()), doctest::Contains("is truncated: magic"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::io::SafetensorsFile::open((dir / "empty").string()), doctest::Contains("no header length"), awq::Error);
  fs::remove_all(dir);
}

#include "awq/io/format.hpp"

TEST_CASE("gguf: type names by number, and every ggml type with a known layout is read") {
  using awq::io::gguf_type_name;
  CHECK(gguf_type_name(0) == "F32");
  CHECK(gguf_type_name(1) == "F16");
  CHECK(gguf_type_name(2) == "Q4_0");
  CHECK(gguf_type_name(3) == "Q4_1");
  CHECK(gguf_type_name(8) == "Q8_0");
  CHECK(gguf_type_name(12) == "Q4_K");
  CHECK(gguf_type_name(30) == "BF16");
  CHECK(gguf_type_name(39) == "MXFP4");
  CHECK(gguf_type_name(42) == "unknown(42)");
  CHECK(gguf_type_name(0xFFFFFFFFu) == "unknown(4294967295)");
  CHECK(awq::io::gguf_value_type_name(8) == "str");
  CHECK(awq::io::gguf_value_type_name(9) == "arr");
  CHECK(awq::io::gguf_value_type_name(13) == "unknown(13)");
  // One block of each laid-out type, tiled at 32-byte alignment.
  std::vector<awq_test::GgufTensorSpec> specs;
  std::vector<std::uint64_t> sizes;
  std::uint64_t off = 0;
  for (std::uint32_t t = 0; t < 48; ++t) {
    const auto* info = awq::io::detail::ggml_type_info(t);
    if (!info || info->block == 0) continue;
    specs.push_back({gguf_type_name(t), {info->block}, t, off});
    sizes.push_back(info->bytes);
    off = (off + info->bytes + 31) / 32 * 32;
  }
  CHECK(specs.size() == 32);
  const auto g = awq::io::GgufFile::from_bytes(awq_test::gguf_file(0, nullptr, specs, static_cast<std::size_t>(off)), "types.gguf");
  for (std::size_t i = 0; i < specs.size(); ++i) CHECK(g.tensor(specs[i].name).n_bytes == sizes[i]);
  CHECK(g.tensor("Q4_K").n_bytes == 144);
  CHECK_THROWS_WITH_AS(g.dequantize("Q4_K"), doctest::Contains("types.gguf: tensor 'Q4_K' has ggml type Q4_K, which this reader does not dequantize"),
                       awq::Error);
}

TEST_CASE("detect_format: GGUF, safetensors, or neither with the reason") {
  const fs::path dir = fs::temp_directory_path() / ("awq_detect_" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::create_directories(dir);
  const auto put = [&](const std::string& name, const std::vector<std::uint8_t>& b) {
    std::ofstream((dir / name).string(), std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    return (dir / name).string();
  };
  using awq::io::detect_format;
  using awq::io::FileFormat;
  CHECK(detect_format(put("a.gguf", awq_test::gguf_file(0, nullptr, {}, 0))).format == FileFormat::gguf);
  const auto st = detect_format(put("a.st", awq_test::st_file("{}", 0)));
  CHECK(st.format == FileFormat::safetensors);
  CHECK(st.reason == "safetensors header of 2 bytes");
  const std::string text = "Once upon a time, a model file was neither.";
  const auto t = detect_format(put("a.txt", std::vector<std::uint8_t>(text.begin(), text.end())));
  CHECK(t.format == FileFormat::unknown);
  CHECK(t.reason.find("neither format: not GGUF (the first bytes are 'Once', not 'GGUF') and not safetensors (a header length of") == 0);
  const auto brace = detect_format(put("b.st", awq_test::st_file("[]", 0)));
  CHECK(brace.format == FileFormat::unknown);
  CHECK(brace.reason.find("the header begins with byte 0x5b, not '{'") != std::string::npos);
  CHECK(detect_format(put("short", {'G', 'G'})).reason == "neither format: 2 bytes are too few for a GGUF or a safetensors file");
  CHECK(detect_format(dir.string()).reason.find("is a directory") != std::string::npos);
  CHECK_THROWS_WITH_AS(detect_format((dir / "none").string()), doctest::Contains("cannot open"), awq::Error);
  CHECK(std::string(awq::io::format_name(FileFormat::safetensors)) == "safetensors");
  fs::remove_all(dir);
}

TEST_CASE("gguf config: the architecture is checked first, and metadata that changes the maths is checked, never narrowed or ignored") {
  // A llama GGUF of metadata and token_embd.weight [vocab 16, hidden 8] alone: what
  // ModelConfig::from_gguf reads. `keys` maps each key to the writer of its type and value.
  using Kv = std::map<std::string, std::function<void(awq_test::GgufWriter&)>>;
  const auto u32 = [](std::uint32_t v) { return [v](awq_test::GgufWriter& w) { w.put<std::uint32_t>(4), w.put<std::uint32_t>(v); }; };
  const auto u64 = [](std::uint64_t v) { return [v](awq_test::GgufWriter& w) { w.put<std::uint32_t>(10), w.put<std::uint64_t>(v); }; };
  const auto str = [](std::string v) { return [v](awq_test::GgufWriter& w) { w.put<std::uint32_t>(8), w.str(v); }; };
  const Kv base = {{"general.architecture", str("llama")},      {"llama.embedding_length", u32(8)},
                   {"llama.feed_forward_length", u32(16)},     {"llama.attention.head_count", u32(2)},
                   {"llama.attention.head_count_kv", u32(2)},  {"llama.block_count", u32(1)},
                   {"llama.context_length", u32(64)},          {"llama.rope.dimension_count", u32(4)},
                   {"tokenizer.ggml.bos_token_id", u32(1)},    {"tokenizer.ggml.eos_token_id", u32(2)}};
  const auto file = [&](const Kv& keys, bool rope_freqs = false) {
    std::vector<awq_test::GgufTensorSpec> t = {{"token_embd.weight", {8, 16}, 0, 0}};
    if (rope_freqs) t.push_back({"rope_freqs.weight", {2}, 0, 512});
    return awq::io::GgufFile::from_bytes(awq_test::gguf_file(keys.size(), [&](awq_test::GgufWriter& w) {
      for (const auto& [k, v] : keys) w.str(k), v(w);
    }, t, rope_freqs ? 544 : 512), "cfg.gguf");
  };
  const auto config = [&](const Kv& keys, bool rope_freqs = false) { return awq::model::ModelConfig::from_gguf(file(keys, rope_freqs), "cfg.gguf"); };
  const auto with = [&](const std::string& k, std::function<void(awq_test::GgufWriter&)> v) {
    Kv keys = base;
    keys[k] = std::move(v);
    return keys;
  };
  const auto c = config(base);
  CHECK(c.vocab == 16);
  CHECK(c.head_dim == 4);
  CHECK(c.max_positions == 64);
  CHECK(c.bos_token == 1);
  CHECK(c.eos_token == 2);
  // Fresh valid values are read as stored.
  AWQ_TEST_FRESH_RNG(rng);
  const auto layers = std::uniform_int_distribution<std::uint32_t>(1, 100000)(rng), eos = std::uniform_int_distribution<std::uint32_t>(0, 15)(rng);
  CHECK(config(with("llama.block_count", u32(layers))).layers == static_cast<int>(layers));
  CHECK(config(with("tokenizer.ggml.eos_token_id", u32(eos))).eos_token == static_cast<int>(eos));
  CHECK(config(with("llama.rope.scaling.type", str("none"))).rope_theta == 10000.0f);

  // Another architecture: named as such, before any of its keys is looked for (in the library's
  // reader and through the weight source).
  CHECK_THROWS_WITH_AS(config(with("general.architecture", str("gpt2"))),
                       doctest::Contains("cfg.gguf: general.architecture 'gpt2' is not supported (accepted: llama)"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::model::GgufSource(file(with("general.architecture", str("gpt2"))), "m.gguf"),
                       doctest::Contains("architecture 'gpt2' is not supported (accepted: llama)"), awq::Error);
  // Sizes wider than an int: the value as stored, not as narrowed (4000000000 would read as -294967296).
  const std::uint32_t wide = 2147483648u + std::uniform_int_distribution<std::uint32_t>(0, 2000000000u)(rng);
  CHECK_THROWS_WITH_AS(config(with("llama.block_count", u32(wide))),
                       doctest::Contains(("cfg.gguf: GGUF metadata 'llama.block_count' is " + std::to_string(wide) +
                                         ", out of range (accepted: an integer from 1 to 2147483647)").c_str()),
                       awq::Error);
  CHECK_THROWS_WITH_AS(config(with("llama.block_count", u32(4000000000u))), doctest::Contains("'llama.block_count' is 4000000000, out of range"),
                       awq::Error);
  CHECK_THROWS_WITH_AS(config(with("llama.embedding_length", u64(~0ull))),
                       doctest::Contains("'llama.embedding_length' is 18446744073709551615, out of range"), awq::Error);
  CHECK_THROWS_WITH_AS(config(with("llama.embedding_length", u64((1ull << 32) + 8))),
                       doctest::Contains("'llama.embedding_length' is 4294967304, out of range"), awq::Error);
  // Context, rotary size, scaling.
  CHECK_THROWS_WITH_AS(config(with("llama.context_length", u32(0))), doctest::Contains("'llama.context_length' is 0, out of range"), awq::Error);
  for (std::uint32_t d : {0u, 3u, 2u, 63u})
    CHECK_THROWS_WITH_AS(config(with("llama.rope.dimension_count", u32(d))),
                         doctest::Contains(("'llama.rope.dimension_count' is " + std::to_string(d) + ", not the head size 4").c_str()), awq::Error);
  CHECK_THROWS_WITH_AS(config(with("llama.rope.scaling.type", str("linear"))),
                       doctest::Contains("rope scaling (type linear) is not supported (accepted: none)"), awq::Error);
  CHECK_THROWS_WITH_AS(config(base, true), doctest::Contains("'rope_freqs.weight': rope scaling"), awq::Error);
  // Token ids outside the embedding's rows.
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id"}) {
    CAPTURE(k);
    const std::uint32_t bad = std::uniform_int_distribution<std::uint32_t>(16, 99999999)(rng);
    CHECK_THROWS_WITH_AS(config(with(k, u32(bad))),
                         doctest::Contains((std::string("'") + k + "' is " + std::to_string(bad) + ", not a token id (accepted: 0 to 15").c_str()),
                         awq::Error);
    CHECK_THROWS_WITH_AS(config(with(k, u32(99999999))), doctest::Contains("is 99999999, not a token id"), awq::Error);
  }
  // rope.freq_base of the wrong type is named by the reader.
  CHECK_THROWS_WITH_AS(config(with("llama.rope.freq_base", str("1e4"))), doctest::Contains("'llama.rope.freq_base' has value type str"), awq::Error);
}
