// Bad input for the safetensors and GGUF readers: one file per structural rule of each format
// (tests/malformed_files.hpp, also the fuzz seeds), each refused with an awq::Error naming the
// file and what broke the rule, from memory and from disk; directories with many tensors read in
// time linear in their size.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "awq/io/gguf.hpp"
#include "awq/io/safetensors.hpp"
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
