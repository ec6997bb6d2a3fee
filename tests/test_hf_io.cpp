// Hugging Face I/O: the sharded writer read back by HfCheckpoint bit for bit (F32, F16, BF16
// against a float64 reference), the shard layout transformers expects, every malformed directory
// refused with the file and tensor named, lazy shard opening, and the transformers goldens.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "awq/io/hf_checkpoint.hpp"
#include "awq/io/safetensors.hpp"
#include "awq/io/safetensors_sharded.hpp"
#include "llama/tokenizer.hpp"
#include "fresh_rng.hpp"
#include "malformed_files.hpp"

namespace fs = std::filesystem;

namespace {

// A fresh empty directory under the system's temporary one, removed with the object.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) : path(fs::temp_directory_path() / ("awq_hfio_" + tag + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// Runs `f` and checks it throws awq::Error whose message holds every fragment.
void expect_error(const std::function<void()>& f, std::initializer_list<std::string> fragments) {
  try {
    f();
  } catch (const awq::Error& e) {
    const std::string msg = e.what();
    for (const auto& frag : fragments) {
      INFO("message: " << msg);
      CHECK(msg.find(frag) != std::string::npos);
    }
    return;
  }
  FAIL("no awq::Error raised; expected one with '" << *fragments.begin() << "'");
}

// The float64 value of an IEEE half / bfloat16 bit pattern, written from the definitions.
double half_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double sign = s ? -1.0 : 1.0;
  if (e == 31) return sign * HUGE_VAL;  // NaNs are not drawn
  if (e == 0) return sign * std::ldexp(m, -24);
  return sign * std::ldexp(1024 + m, e - 25);
}
double bf16_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
  const double sign = s ? -1.0 : 1.0;
  if (e == 255) return sign * HUGE_VAL;
  if (e == 0) return sign * std::ldexp(m, -133);
  return sign * std::ldexp(128 + m, e - 134);
}

// Random 16-bit patterns without NaNs or zeros (so a value left unwritten cannot pass), with a
// few infinities and subnormals among them.
std::vector<std::uint16_t> random_bits(std::size_t n, int exp_bits, std::mt19937_64& rng) {
  const int mant_bits = 15 - exp_bits;
  const std::uint16_t exp_mask = static_cast<std::uint16_t>(((1u << exp_bits) - 1) << mant_bits);
  std::vector<std::uint16_t> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint16_t h;
    do {
      h = static_cast<std::uint16_t>(rng());
      if (i % 97 == 5) h = static_cast<std::uint16_t>((h & 0x8000u) | exp_mask);              // ±inf
      if (i % 89 == 7) h = static_cast<std::uint16_t>(h & ~exp_mask);                          // subnormal
    } while ((h & 0x7FFFu) == 0 || ((h & exp_mask) == exp_mask && (h & ~exp_mask & 0x7FFFu) != 0));
    v[i] = h;
  }
  return v;
}

std::int64_t count(const std::vector<std::int64_t>& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// One model's tensors, each with its float64 reference.
struct Ref {
  std::string name, dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;
  std::vector<double> value;
};

std::vector<Ref> random_model(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01;
  std::vector<Ref> out;
  const std::vector<std::vector<std::int64_t>> shapes = {{24, 16}, {16}, {7, 3, 5}, {40, 8}, {1}, {33}, {8, 8}};
  const char* dtypes[] = {"F32", "F16", "BF16"};
  for (std::size_t i = 0; i < shapes.size() * 3; ++i) {
    Ref r;
    r.name = "model.layers." + std::to_string(i / 3) + ".w" + std::to_string(i % 3) + ".weight";
    r.dtype = dtypes[i % 3];
    r.shape = shapes[i % shapes.size()];
    const auto n = static_cast<std::size_t>(count(r.shape));
    if (r.dtype == "F32") {
      std::vector<float> f(n);
      for (auto& x : f) {
        do x = static_cast<float>(n01(rng)); while (x == 0.0f);
      }
      r.value.assign(f.begin(), f.end());
      r.bytes.resize(4 * n);
      std::memcpy(r.bytes.data(), f.data(), 4 * n);
    } else {
      const bool bf = r.dtype == "BF16";
      const auto bits = random_bits(n, bf ? 8 : 5, rng);
      for (auto b : bits) r.value.push_back(bf ? bf16_value(b) : half_value(b));
      r.bytes.resize(2 * n);
      std::memcpy(r.bytes.data(), bits.data(), 2 * n);
    }
    out.push_back(std::move(r));
  }
  return out;
}

void write_config(const fs::path& dir) { write_text(dir / "config.json", R"({"model_type": "llama", "hidden_size": 16})"); }

// A safetensors file's header, parsed independently of the library.
nlohmann::json raw_header(const fs::path& p, std::uint64_t* header_len = nullptr, std::uint64_t* size = nullptr) {
  std::ifstream f(p, std::ios::binary);
  std::uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string text(n, '\0');
  f.read(text.data(), static_cast<std::streamsize>(n));
  if (header_len) *header_len = n;
  if (size) *size = fs::file_size(p);
  return nlohmann::json::parse(text);
}

std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST_CASE("hf io: sharded writer -> HfCheckpoint round trip is bit-exact, shards cut and laid out as transformers does") {
  const auto model = random_model(7);
  // Header reserves: none (each shard copied behind its header), one every header fits (shards
  // completed in place), one too small for any header (the copy again).
  for (const std::uint64_t reserve : {std::uint64_t{0}, std::uint64_t{4096}, std::uint64_t{64}})
  for (const std::uint64_t limit : {std::uint64_t{1} << 30, std::uint64_t{1000}, std::uint64_t{1}}) {
    CAPTURE(reserve);
    CAPTURE(limit);
    TempDir dir("rt");
    write_config(dir.path);
    // A stale export of another shape that finish() must replace.
    write_text(dir.path / "model-00001-of-00009.safetensors", "stale");
    std::vector<std::string> files;
    {
      awq::io::ShardedSafetensorsWriter w(dir.str(), limit, reserve);
      for (const auto& r : model) w.add(r.name, r.dtype, r.shape, r.bytes);
      files = w.finish();
    }
    // Expected cut: a tensor that would take the open shard past the limit starts a new one.
    std::vector<std::vector<std::string>> shards(1);
    std::uint64_t open = 0, total = 0;
    for (const auto& r : model) {
      if (!shards.back().empty() && open + r.bytes.size() > limit) {
        shards.emplace_back();
        open = 0;
      }
      shards.back().push_back(r.name);
      open += r.bytes.size();
      total += r.bytes.size();
    }
    const std::size_t n_shards = shards.size();
    if (limit == 1) CHECK(n_shards == model.size());
    std::vector<std::string> want_files;
    for (std::size_t i = 0; i < n_shards; ++i)
      want_files.push_back(n_shards == 1 ? "model.safetensors" : awq::io::ShardedSafetensorsWriter::shard_name(i, n_shards));
    std::vector<std::string> want_listing = want_files;
    want_listing.push_back("config.json");
    if (n_shards > 1) want_listing.push_back("model.safetensors.index.json");
    std::sort(want_listing.begin(), want_listing.end());
    CHECK(listing(dir.path) == want_listing);  // no temporary, no stale shard
    CHECK(files.size() == n_shards + (n_shards > 1 ? 1 : 0));

    // The index, as transformers reads it.
    if (n_shards > 1) {
      std::ifstream f(dir.path / "model.safetensors.index.json");
      const auto index = nlohmann::json::parse(f);
      CHECK(index.at("metadata").at("total_size").get<std::uint64_t>() == total);
      CHECK(index.at("weight_map").size() == model.size());
      for (std::size_t s = 0; s < n_shards; ++s)
        for (const auto& name : shards[s]) CHECK(index.at("weight_map").at(name).get<std::string>() == want_files[s]);
    }
    // Each shard: format pt, 8-byte aligned data, offsets in the order added and contiguous from 0 to the end.
    for (std::size_t s = 0; s < n_shards; ++s) {
      std::uint64_t hl = 0, size = 0;
      const auto h = raw_header(dir.path / want_files[s], &hl, &size);
      CHECK(h.at("__metadata__") == nlohmann::json({{"format", "pt"}}));
      CHECK((8 + hl) % 8 == 0);
      if (reserve == 4096) CHECK(8 + hl == reserve);  // completed in place: the header padded to the reserve
      if (reserve == 64) CHECK(8 + hl > reserve);      // did not fit: copied behind a header as long as it needs
      CHECK(h.size() == shards[s].size() + 1);
      std::uint64_t at = 0;
      for (const auto& name : shards[s]) {
        const auto& off = h.at(name).at("data_offsets");
        CHECK(off[0].get<std::uint64_t>() == at);
        at = off[1].get<std::uint64_t>();
      }
      CHECK(8 + hl + at == size);
    }

    const auto ck = awq::io::HfCheckpoint::open(dir.str());
    CHECK(ck.config().at("hidden_size") == 16);
    CHECK(ck.dir() == dir.str());
    std::vector<std::string> names;
    for (const auto& r : model) names.push_back(r.name);
    std::sort(names.begin(), names.end());
    CHECK(ck.names() == names);
    for (std::size_t s = 0; s < n_shards; ++s) {
      for (const auto& name : shards[s]) {
        const auto& r = *std::find_if(model.begin(), model.end(), [&](const Ref& x) { return x.name == name; });
        CHECK(ck.contains(name));
        const auto info = ck.info(name);
        CHECK(info.dtype == r.dtype);
        CHECK(info.shape == r.shape);
        CHECK(info.file == (dir.path / want_files[s]).string());
        CHECK(ck.file_of(name) == info.file);
        const auto v = ck.load_f32(name, r.shape);
        REQUIRE(v.size() == r.value.size());
        std::size_t bad = 0;
        for (std::size_t i = 0; i < v.size(); ++i) bad += static_cast<double>(v[i]) != r.value[i];
        CHECK(bad == 0);
        CHECK(ck.tensor(name).data == r.bytes);
      }
    }
    CHECK_FALSE(ck.contains("lm_head.weight"));
  }
}

TEST_CASE("hf io: a single-shard export replaces a sharded one in place, and the other way round") {
  TempDir dir("replace");
  write_config(dir.path);
  const auto model = random_model(11);
  const auto write = [&](std::uint64_t limit, std::size_t from) {
    awq::io::ShardedSafetensorsWriter w(dir.str(), limit);
    for (std::size_t i = from; i < model.size(); ++i) w.add(model[i].name, model[i].dtype, model[i].shape, model[i].bytes);
    w.finish();
  };
  write(1, 0);
  CHECK(awq::io::HfCheckpoint::open(dir.str()).names().size() == model.size());
  write(std::uint64_t{1} << 30, 3);
  CHECK(listing(dir.path) == std::vector<std::string>{"config.json", "model.safetensors"});
  CHECK(awq::io::HfCheckpoint::open(dir.str()).names().size() == model.size() - 3);
  write(1, 5);
  const auto ck = awq::io::HfCheckpoint::open(dir.str());
  CHECK(ck.names().size() == model.size() - 5);
  CHECK_FALSE(fs::exists(dir.path / "model.safetensors"));
  CHECK(ck.load_f32(model[5].name, model[5].shape).size() == model[5].value.size());
}

TEST_CASE("hf io: the writer refuses misuse and leaves no temporary file behind") {
  TempDir dir("werr");
  expect_error([&] { awq::io::ShardedSafetensorsWriter((dir.path / "nope").string(), 10); }, {"nope", "is not a directory"});
  expect_error([&] { awq::io::ShardedSafetensorsWriter(dir.str(), 0); }, {"max_shard_bytes is 0"});
  {
    awq::io::ShardedSafetensorsWriter w(dir.str(), 8);
    w.add_typed("a", "F32", {2}, std::vector<float>{1, 2});
    expect_error([&] { w.add_typed("a", "F32", {2}, std::vector<float>{1, 2}); }, {"'a'", "added twice"});
    expect_error([&] { w.add_typed("b", "F32", {3}, std::vector<float>{1, 2}); }, {"'b'", "8 bytes", "need 12"});
    w.add_typed("c", "F32", {2}, std::vector<float>{3, 4});  // writes shard 1 (a) to its temporary name
    CHECK(listing(dir.path) == std::vector<std::string>{".model-shard-00001.safetensors", ".model-shard-00002.data"});
  }  // abandoned: the temporary shard goes
  CHECK(listing(dir.path).empty());
  awq::io::ShardedSafetensorsWriter w(dir.str(), 8);
  expect_error([&] { w.finish(); }, {"no tensor was added"});
  w.add_typed("a", "F32", {1}, std::vector<float>{1});
  w.finish();
  expect_error([&] { w.add_typed("z", "F32", {1}, std::vector<float>{1}); }, {"'z'", "after finish()"});
}

TEST_CASE("hf io: malformed model directories are refused at open, naming the file and tensor") {
  TempDir dir("bad");
  const fs::path d = dir.path;
  const auto open = [&] { awq::io::HfCheckpoint::open(d.string()); };
  const auto st = [&](const std::string& file, std::initializer_list<const char*> names) {
    awq::io::SafetensorsWriter w;
    w.metadata("format", "pt");  // (an empty writer would write the header `null`)
    for (const char* n : names) w.add_typed(n, "F32", {2}, std::vector<float>{1.5f, -2.0f});
    w.write((d / file).string());
  };
  const auto index = [&](const nlohmann::json& map) {
    write_text(d / "model.safetensors.index.json", nlohmann::json({{"metadata", {{"total_size", 0}}}, {"weight_map", map}}).dump());
  };
  const auto reset = [&] {
    for (const auto& e : fs::directory_iterator(d)) fs::remove(e.path());
  };

  expect_error([&] { awq::io::HfCheckpoint::open((d / "missing").string()); }, {"missing", "is not a directory"});
  expect_error(open, {d.string(), "has no config.json"});
  write_text(d / "config.json", "{\"hidden_size\": ");
  expect_error(open, {"config.json", "is not valid JSON"});
  write_text(d / "config.json", "[1]");
  expect_error(open, {"config.json", "is not a JSON object"});
  write_config(d);
  expect_error(open, {d.string(), "neither model.safetensors nor model.safetensors.index.json"});
  st("model-00001-of-00002.safetensors", {"a"});
  expect_error(open, {"model-00001-of-00002.safetensors", "but no model.safetensors.index.json"});
  st("model.safetensors", {"a"});
  index({{"a", "model-00001-of-00002.safetensors"}});
  expect_error(open, {"both model.safetensors and model.safetensors.index.json"});
  fs::remove(d / "model.safetensors");

  write_text(d / "model.safetensors.index.json", "{\"weight_map\": [");
  expect_error(open, {"model.safetensors.index.json", "is not valid JSON"});
  write_text(d / "model.safetensors.index.json", "{\"metadata\": {}}");
  expect_error(open, {"model.safetensors.index.json", "has no weight_map"});
  index({{"a", 3}});
  expect_error(open, {"tensor 'a'", "maps to 3"});
  index({{"a", "../model-00001-of-00002.safetensors"}});
  expect_error(open, {"tensor 'a'", "not a file name in"});
  index({{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}});
  expect_error(open, {"model-00002-of-00002.safetensors", "of tensor 'b'", "does not exist"});
  st("model-00002-of-00002.safetensors", {});
  expect_error(open, {"maps tensor 'b'", "model-00002-of-00002.safetensors", "does not hold it"});
  // A tensor the shard holds but the index does not list.
  index({{"a", "model-00001-of-00002.safetensors"}, {"c", "model-00002-of-00002.safetensors"}});
  st("model-00002-of-00002.safetensors", {"c", "d"});
  expect_error(open, {"model-00002-of-00002.safetensors", "holds tensor 'd'", "does not list"});
  // A tensor in both shards, whichever the index names.
  st("model-00002-of-00002.safetensors", {"a", "c"});
  expect_error(open, {"tensor 'a' is in two shards", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
  // The index names the other shard.
  st("model-00001-of-00002.safetensors", {});
  expect_error(open, {"maps tensor 'a' to model-00001-of-00002.safetensors", "but it is in", "model-00002-of-00002.safetensors"});
  // A shard truncated before open, and one with an overlap.
  st("model-00001-of-00002.safetensors", {"a"});
  st("model-00002-of-00002.safetensors", {"c"});
  index({{"a", "model-00001-of-00002.safetensors"}, {"c", "model-00002-of-00002.safetensors"}});
  awq::io::HfCheckpoint::open(d.string());  // now well formed
  fs::resize_file(d / "model-00002-of-00002.safetensors", fs::file_size(d / "model-00002-of-00002.safetensors") - 1);
  expect_error(open, {"model-00002-of-00002.safetensors", "tensor 'c'", "truncated"});
  reset();
  write_config(d);
  {
    const std::string h = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
    std::ofstream f(d / "model.safetensors", std::ios::binary);
    const std::uint64_t n = h.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << h << std::string(12, '\0');
  }
  expect_error(open, {"model.safetensors", "tensors 'x' and 'y' overlap"});
}

TEST_CASE("hf io: load_f32 refuses a missing tensor, a wrong shape and a dtype it cannot convert") {
  TempDir dir("load");
  write_config(dir.path);
  {
    awq::io::ShardedSafetensorsWriter w(dir.str(), 1 << 20);
    w.add_typed("w", "F32", {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
    w.add_typed("ids", "I32", {2}, std::vector<std::int32_t>{7, 8});
    w.finish();
  }
  const auto ck = awq::io::HfCheckpoint::open(dir.str());
  const std::string file = (dir.path / "model.safetensors").string();
  expect_error([&] { ck.load_f32("v", {2, 3}); }, {dir.str(), "no tensor 'v'"});
  expect_error([&] { ck.info("v"); }, {"no tensor 'v'"});
  expect_error([&] { ck.load_f32("w", {3, 2}); }, {file, "tensor 'w'", "shape [2, 3], expected [3, 2]"});
  expect_error([&] { ck.load_f32("ids", {2}); }, {file, "tensor 'ids'", "is I32"});
  CHECK(ck.load_f32("w", {2, 3}) == std::vector<float>{1, 2, 3, 4, 5, 6});
  const auto raw = ck.tensor("ids");
  CHECK(raw.dtype == "I32");
  std::int32_t ids[2];
  std::memcpy(ids, raw.data.data(), 8);
  CHECK((ids[0] == 7 && ids[1] == 8));
}

TEST_CASE("hf io: shards open lazily, at their first read, truncation under the reader is an error, not a SIGBUS") {
  TempDir dir("lazy");
  write_config(dir.path);
  const auto model = random_model(3);
  {
    awq::io::ShardedSafetensorsWriter w(dir.str(), 1);  // one tensor a shard
    for (const auto& r : model) w.add(r.name, r.dtype, r.shape, r.bytes);
    w.finish();
  }
  auto ck = awq::io::HfCheckpoint::open(dir.str());
  CHECK(ck.open_files() == 0);
  CHECK(ck.load_f32(model[0].name, model[0].shape).size() == model[0].value.size());
  CHECK(ck.open_files() == 1);
  CHECK(ck.load_f32(model[0].name, model[0].shape).size() == model[0].value.size());
  CHECK(ck.open_files() == 1);
  // A shard truncated after open: found when it is first read...
  const std::string f1 = ck.file_of(model[1].name);
  fs::resize_file(f1, fs::file_size(f1) - 3);
  expect_error([&] { ck.load_f32(model[1].name, model[1].shape); }, {f1, "is truncated", model[1].name});
  // ...and when it is already open (the size is checked again before each map).
  const std::string f0 = ck.file_of(model[0].name);
  fs::resize_file(f0, 16);
  expect_error([&] { ck.load_f32(model[0].name, model[0].shape); }, {f0, "is truncated", model[0].name});
  expect_error([&] { ck.tensor(model[0].name); }, {f0, "is truncated"});
  // Other shards read as before.
  const auto& r = model[2];
  const auto v = ck.load_f32(r.name, r.shape);
  for (std::size_t i = 0; i < v.size(); ++i) REQUIRE(static_cast<double>(v[i]) == r.value[i]);
  CHECK(ck.open_files() == 3);  // the truncated ones stay open, checked again at each read
  ck.release();
  CHECK(ck.open_files() == 0);
  CHECK(ck.load_f32(r.name, r.shape) == v);
}

TEST_CASE("hf io: reads from several threads, with release() between them, agree with the reference") {
  TempDir dir("threads");
  write_config(dir.path);
  const auto model = random_model(5);
  {
    awq::io::ShardedSafetensorsWriter w(dir.str(), 600);
    for (const auto& r : model) w.add(r.name, r.dtype, r.shape, r.bytes);
    w.finish();
  }
  auto ck = awq::io::HfCheckpoint::open(dir.str());
  std::vector<std::size_t> bad(3, 0);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < bad.size(); ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 4; ++round)
        for (std::size_t k = 0; k < model.size(); ++k) {
          const auto& r = model[(k + t * 5) % model.size()];
          const auto v = ck.load_f32(r.name, r.shape);
          for (std::size_t i = 0; i < v.size(); ++i) bad[t] += static_cast<double>(v[i]) != r.value[i];
          if (t == 0 && k % 4 == 0) ck.release();
        }
    });
  for (auto& th : threads) th.join();
  CHECK(bad == std::vector<std::size_t>(3, 0));
}

TEST_CASE("hf io: transformers' own checkpoints (tests/golden/arch_*/hf) open and every tensor reads") {
  for (const char* arch : {"arch_llama3_gqa", "arch_mistral", "arch_opt", "arch_qwen2_bias", "arch_smollm_tied"}) {
    CAPTURE(arch);
    const std::string dir = std::string(AWQ_GOLDEN_DIR) + "/" + arch + "/hf";
    const auto ck = awq::io::HfCheckpoint::open(dir);
    CHECK(ck.config().contains("model_type"));
    REQUIRE(ck.names().size() > 5);
    for (const auto& name : ck.names()) {
      const auto info = ck.info(name);
      // Against the independent whole-file reader.
      const auto t = awq::io::SafetensorsFile::open(info.file).tensor(name);
      CHECK(ck.tensor(name).data == t.data);
      const auto v = ck.load_f32(name, info.shape);
      CHECK(static_cast<std::int64_t>(v.size()) == count(info.shape));
      if (t.dtype == "F32") CHECK(std::memcmp(v.data(), t.data.data(), t.data.size()) == 0);
      CHECK(std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }));
    }
    if (std::string(arch) == "arch_qwen2_bias") CHECK(ck.open_files() == 11);  // the sharded one
  }
}

namespace {

// GPT-2's byte -> symbol table, written from its definition: printable bytes map to themselves,
// the other 68 to U+0100 onwards in byte order.
std::string byte_symbol(int b) {
  const auto printable = [](int x) { return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255); };
  int cp = b;
  if (!printable(b)) {
    cp = 256;
    for (int x = 0; x < b; ++x) cp += !printable(x);
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// A byte-level BPE tokenizer.json: the 256 byte symbols (ids 0-255), five merges, one added token.
nlohmann::json tiny_tokenizer(bool merges_as_pairs) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"\xC4\xA0", "w"}};
  nlohmann::json m = nlohmann::json::array();
  for (const auto& [a, b] : merges) {
    vocab[a + b] = vocab.size();
    if (merges_as_pairs) m.push_back({a, b});
    else m.push_back(a + " " + b);
  }
  nlohmann::json j;
  j["added_tokens"] = {{{"id", vocab.size()}, {"content", "<|endoftext|>"}, {"special", true}}};
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Digits"}, {"individual_digits", true}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}}}};
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", m}};
  return j;
}

}  // namespace

TEST_CASE("hf io: tokenizer.json (byte-level BPE) encodes by its merges, what it cannot do is refused") {
  TempDir dir("tok");
  const std::string path = (dir.path / "tokenizer.json").string();
  const auto load = [&](const nlohmann::json& j) {
    write_text(path, j.dump());
    return awq_example::BpeTokenizer::from_hf_json(path);
  };
  auto tok = load(tiny_tokenizer(false));
  CHECK(tok.vocab_size() == 262);
  // "hello" merges whole (id 259); " world": "Ġw" (260) then single bytes; "42": two digit pieces.
  const std::vector<int> want = {259, 260, 'o', 'r', 'l', 'd', '4', '2'};
  CHECK(tok.encode("hello world42") == want);
  CHECK(load(tiny_tokenizer(true)).encode("hello world42") == want);
  const std::string utf8 = "h\xC3\xA9llo \xE2\x98\x83 \xF0\x9F\x99\x82 na\xC3\xAFve";  // héllo ☃ 🙂 naïve
  const auto ids = tok.encode(utf8);
  CHECK(tok.decode(ids) == utf8);
  CHECK(ids[0] == 'h');
  CHECK(ids[1] == 0xC3);  // ids 0-255 follow byte order
  CHECK(ids[3] == 257);   // "ll"
  CHECK(tok.encode("hello")[0] == 259);

  const auto refuse = [&](const std::function<void(nlohmann::json&)>& edit, std::initializer_list<std::string> frags) {
    auto j = tiny_tokenizer(false);
    edit(j);
    expect_error([&] { load(j); }, frags);
  };
  refuse([](nlohmann::json& j) { j["model"]["type"] = "WordPiece"; }, {path, "model.type is \"WordPiece\""});
  refuse([](nlohmann::json& j) { j["model"]["byte_fallback"] = true; }, {"model.byte_fallback is true"});
  refuse([](nlohmann::json& j) { j["model"]["continuing_subword_prefix"] = "##"; }, {"model.continuing_subword_prefix"});
  refuse([](nlohmann::json& j) { j["normalizer"] = {{"type", "NFC"}}; }, {"normalizer (\"NFC\")"});
  refuse([](nlohmann::json& j) { j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}; },
         {"pre_tokenizer", "is not supported"});
  refuse([](nlohmann::json& j) { j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Split"}, {"pattern", {{"Regex", "x"}}}}; },
         {"pre_tokenizer", "Split"});
  refuse([](nlohmann::json& j) { j["model"]["vocab"]["he"] = 300; }, {"no token has id 256"});
  refuse([](nlohmann::json& j) { j["model"]["vocab"]["he"] = 0; }, {"model.vocab: id 0 is both"});
  refuse([](nlohmann::json& j) { j["model"]["vocab"]["he"] = -1; }, {"token 'he' has id -1"});
  refuse([](nlohmann::json& j) { j["added_tokens"][0]["id"] = 5; }, {"added_tokens: id 5 is both"});
  refuse([](nlohmann::json& j) { j["added_tokens"][0].erase("content"); }, {"added_tokens: an entry has no string content"});
  refuse([](nlohmann::json& j) { j["model"]["merges"][2] = "hell"; }, {"model.merges[2] is \"hell\""});
  refuse([](nlohmann::json& j) { j["model"]["merges"][1] = {"l l", "x"}; }, {"model.merges[1]"});
  refuse([](nlohmann::json& j) { j["model"]["merges"] = 7; }, {"model.merges is not an array"});
  write_text(path, "{\"model\": ");
  expect_error([&] { awq_example::BpeTokenizer::from_hf_json(path); }, {path, "is not valid JSON"});
  expect_error([&] { awq_example::BpeTokenizer::from_hf_json(path + "x"); }, {"cannot open"});
}

namespace {

// GPT-2's layout as OPT has it: four special tokens, then the 256 byte symbols (ids 4-259), then
// seven merges (ids 260-266) whose ranks matter: "4 2" (5) before "Ġ 4" (6).
struct Gpt2Files {
  TempDir dir{"gpt2tok"};
  std::vector<std::pair<std::string, std::string>> merges = {{"\xC4\xA0", "w"}, {"o", "r"},   {"\xC4\xA0w", "or"}, {"l", "d"},
                                                             {"\xC4\xA0wor", "ld"}, {"4", "2"}, {"\xC4\xA0", "4"}};
  nlohmann::ordered_json vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}};
  Gpt2Files() {
    for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = 4 + b;
    std::string m = "#version: 0.2\n";
    for (const auto& [a, b] : merges) {
      vocab[a + b] = vocab.size();
      m += a + " " + b + "\n";
    }
    write_text((dir.path / "vocab.json").string(), vocab.dump());
    write_text((dir.path / "merges.txt").string(), m);
    write_text((dir.path / "tokenizer_config.json").string(), R"({"add_bos_token": true, "bos_token": {"content": "</s>"}, "unk_token": "</s>"})");
  }
  // The same tokenizer as transformers saves it: tokenizer.json with GPT-2's ByteLevel
  // pre-tokenizer and a TemplateProcessing post-processor that puts </s> first.
  nlohmann::json tokenizer_json() const {
    nlohmann::json m = nlohmann::json::array();
    for (const auto& [a, b] : merges) m.push_back({a, b});
    nlohmann::json j;
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    j["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", {{{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                           {"special_tokens", {{"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}}}}};
    j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
                  {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                  {"vocab", vocab}, {"merges", m}};
    return j;
  }
};

}  // namespace

TEST_CASE("tokenizer: GPT-2's pre-tokenization cuts text as its regex over Unicode classes") {
  using T = awq_example::BpeTokenizer;
  using V = std::vector<std::string>;
  // Each expected list follows the regex's alternatives in order ('s|'t|… | ?\p{L}+| ?\p{N}+|
  // ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+): a space joins the next letter/number/other run; a run of
  // spaces before a word leaves its last space to the word; "—" (Pd), "🙂" (So) are "other";
  // "²" and "½" (No) and "٣" (Nd) numbers; "你" (Lo) a letter; NBSP white space.
  CHECK(T::pretokenize_gpt2("Hello world's 2024 na\xC3\xAFve\xE2\x80\x94" "caf\xC3\xA9  x\n\ny") ==
        V{"Hello", " world", "'s", " 2024", " na\xC3\xAFve", "\xE2\x80\x94", "caf\xC3\xA9", " ", " x", "\n", "\n", "y"});
  CHECK(T::pretokenize_gpt2("x\xC2\xB2 \xC2\xBD \xD9\xA3" "4 \xE4\xBD\xA0\xE5\xA5\xBD\xF0\x9F\x99\x82 it'S ''s\xC2\xA0" "a  \t b ") ==
        V{"x", "\xC2\xB2", " \xC2\xBD", " \xD9\xA3" "4", " \xE4\xBD\xA0\xE5\xA5\xBD", "\xF0\x9F\x99\x82", " it", "'", "S", " ''", "s",
          "\xC2\xA0", "a", "  \t", " b", " "});
  CHECK(T::pretokenize_gpt2("don't  stop 42!!") == V{"don", "'t", " ", " stop", " 42", "!!"});
  CHECK(T::pretokenize_gpt2("").empty());
  CHECK(T::pretokenize_gpt2("a\xFF" "b") == V{"a", "\xFF", "b"});  // an invalid byte is punctuation
}

TEST_CASE("tokenizer: GPT-2's vocab.json + merges.txt and its tokenizer.json encode alike, </s> first as OPT's") {
  const Gpt2Files f;
  const std::string dir = f.dir.path.string();
  auto slow = awq_example::BpeTokenizer::from_hf_dir(dir);
  CHECK(slow.pretokenizer() == awq_example::BpeTokenizer::Pretokenizer::gpt2);
  CHECK(slow.prefix() == std::vector<int>{2});
  // Bytes are ids 4 + b: "hello" has no merge; " world" merges whole (264) by rank; "42" is one
  // number piece (265); " 2024" stays bytes; " 42": "4 2" ranks before "Ġ 4", so Ġ + "42".
  const std::vector<int> want = {2, 108, 105, 112, 112, 115, 264, 265, 36, 54, 52, 54, 56, 36, 265};
  CHECK(slow.encode("hello world42 2024 42") == want);
  // Non-ASCII bytes go through the byte map: é is C3 A9 → ids 199, 173; ☃ E2 98 83; "\n\n x" → Ċ Ċ Ġx.
  const std::string utf8 = "h\xC3\xA9llo \xE2\x98\x83 na\xC3\xAFve\n\n x";
  const std::vector<int> want_utf8 = {2, 108, 199, 173, 112, 112, 115, 36, 230, 156, 135, 36, 114, 101, 199, 179, 122, 105, 14, 14, 36, 124};
  CHECK(slow.encode(utf8) == want_utf8);
  CHECK(slow.decode(std::vector<int>(want_utf8.begin() + 1, want_utf8.end())) == utf8);

  // tokenizer.json takes precedence in a directory and gives the same ids.
  write_text((f.dir.path / "tokenizer.json").string(), f.tokenizer_json().dump());
  auto fast = awq_example::BpeTokenizer::from_hf_dir(dir);
  CHECK(fast.encode("hello world42 2024 42") == want);
  CHECK(fast.encode(utf8) == want_utf8);
  auto j = f.tokenizer_json();
  j["post_processor"] = nullptr;  // no template: no </s>
  write_text((f.dir.path / "tokenizer.json").string(), j.dump());
  CHECK(awq_example::BpeTokenizer::from_hf_dir(dir).encode("hello") == std::vector<int>{108, 105, 112, 112, 115});
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  write_text((f.dir.path / "tokenizer.json").string(), j.dump());
  expect_error([&] { awq_example::BpeTokenizer::from_hf_dir(dir); }, {"post_processor \"RobertaProcessing\" is not supported"});
  fs::remove(f.dir.path / "tokenizer.json");

  // Without tokenizer_config.json: no BOS (GPT2Tokenizer's default), and a symbol missing from the
  // vocabulary is an error; with its unk_token it becomes that token.
  TempDir small("gpt2small");
  write_text((small.path / "vocab.json").string(), R"({"</s>": 0, "a": 1})");
  write_text((small.path / "merges.txt").string(), "#version: 0.2\n");
  expect_error([&] { awq_example::BpeTokenizer::from_hf_dir(small.path.string()).encode("az"); }, {"symbol 'z' is not in the vocabulary"});
  write_text((small.path / "tokenizer_config.json").string(), R"({"unk_token": "</s>"})");
  CHECK(awq_example::BpeTokenizer::from_hf_dir(small.path.string()).encode("az") == std::vector<int>{1, 0});

  // What cannot be read is an error naming the file.
  write_text((small.path / "tokenizer_config.json").string(), R"({"add_bos_token": true, "bos_token": "<s>"})");
  expect_error([&] { awq_example::BpeTokenizer::from_hf_dir(small.path.string()); }, {"tokenizer_config.json: bos_token '<s>' is not in the vocabulary"});
  write_text((small.path / "merges.txt").string(), "#version: 0.2\na b c\n");
  expect_error([&] { awq_example::BpeTokenizer::from_hf_dir(small.path.string()); }, {"merges.txt: line 2 is 'a b c'"});
  write_text((small.path / "vocab.json").string(), R"({"</s>": 0, "a": 2})");
  expect_error([&] { awq_example::BpeTokenizer::from_hf_dir(small.path.string()); }, {"vocab.json: no token has id 1"});
  fs::remove(small.path / "merges.txt");
  expect_error([&] { awq_example::BpeTokenizer::from_hf_dir(small.path.string()); },
               {"has no tokenizer (accepted: tokenizer.json, or vocab.json with merges.txt)"});
}

TEST_CASE("hf io: a JSON file that does not parse is named with its line and column, without nlohmann's exception id") {
  TempDir dir("badjson");
  const fs::path d = dir.path;
  // A fresh malformed text: a random number of good lines, then a key with no value.
  AWQ_TEST_FRESH_RNG(rng);
  const int lines = std::uniform_int_distribution<int>(1, 9)(rng);
  std::string text = "{\n";
  for (int i = 0; i < lines; ++i) text += "  \"k" + std::to_string(i) + "\": " + std::to_string(rng() % 1000) + ",\n";
  text += "  \"hidden_size\": }\n";
  const std::string at = "at line " + std::to_string(lines + 2) + ", column 18";
  const auto plain = [&](const std::function<void()>& f, std::initializer_list<std::string> frags) {
    std::string msg;
    try {
      f();
    } catch (const awq::Error& e) {
      msg = e.what();
    }
    INFO("message: " << msg);
    for (const auto& frag : frags) CHECK(msg.find(frag) != std::string::npos);
    CHECK(msg.find("json.exception") == std::string::npos);
    CHECK(msg.find("parse_error") == std::string::npos);
  };
  write_text(d / "config.json", text);
  plain([&] { awq::io::HfCheckpoint::open(d.string()); }, {(d / "config.json").string() + " is not valid JSON: " + at + ": syntax error"});
  // The shard index.
  write_config(d);
  write_text(d / "model.safetensors.index.json", text);
  plain([&] { awq::io::HfCheckpoint::open(d.string()); }, {"model.safetensors.index.json is not valid JSON: " + at});
  fs::remove(d / "model.safetensors.index.json");
  // A safetensors header, read alone (HfCheckpoint) and whole (SafetensorsFile).
  const auto st = awq_test::st_file("{\"a\":" + std::string(lines, ' '), 0);
  std::ofstream(d / "model.safetensors", std::ios::binary).write(reinterpret_cast<const char*>(st.data()), static_cast<std::streamsize>(st.size()));
  plain([&] { awq::io::HfCheckpoint::open(d.string()); }, {"model.safetensors: malformed JSON header (not valid JSON): at line 1"});
  plain([&] { awq::io::SafetensorsFile::open((d / "model.safetensors").string()); },
        {"model.safetensors: malformed JSON header (not valid JSON): at line 1"});
  // A tokenizer file.
  write_text(d / "tokenizer.json", text);
  plain([&] { awq_example::BpeTokenizer::from_hf_json((d / "tokenizer.json").string()); },
        {(d / "tokenizer.json").string() + " is not valid JSON: " + at});
}

TEST_CASE("tokenizer: a GGUF merges entry that is not a space-separated pair is refused at load, naming its index") {
  // tokens a, b, ab, c, abc and the merges "a b", "ab c", with one entry broken at a fresh place.
  const auto gguf = [](const std::vector<std::string>& merges) {
    const std::vector<std::string> toks = {"a", "b", "ab", "c", "abc"};
    const auto arr = [](awq_test::GgufWriter& w, const std::string& key, const std::vector<std::string>& v) {
      w.str(key);
      w.put<std::uint32_t>(9);
      w.put<std::uint32_t>(8);
      w.put<std::uint64_t>(v.size());
      for (const auto& x : v) w.str(x);
    };
    return awq::io::GgufFile::from_bytes(awq_test::gguf_file(4, [&](awq_test::GgufWriter& w) {
      awq_test::kv_str(w, "general.architecture", "llama");
      awq_test::kv_str(w, "tokenizer.ggml.model", "gpt2");
      arr(w, "tokenizer.ggml.tokens", toks);
      arr(w, "tokenizer.ggml.merges", merges);
    }, {}, 0), "tok.gguf");
  };
  awq_example::BpeTokenizer good(gguf({"a b", "ab c"}));
  CHECK(good.encode("abc") == std::vector<int>{4});
  AWQ_TEST_FRESH_RNG(rng);
  const std::vector<std::string> broken = {"nospace", "ab", " ab", "ab ", "a  b", "a b c", ""};
  const std::string bad = broken[rng() % broken.size()];
  std::vector<std::string> merges = {"a b", "ab c"};
  const std::size_t at = rng() % (merges.size() + 1);
  merges.insert(merges.begin() + static_cast<std::ptrdiff_t>(at), bad);
  CAPTURE(bad);
  CHECK_THROWS_WITH_AS(awq_example::BpeTokenizer{gguf(merges)},
                       doctest::Contains(("tok.gguf: tokenizer.ggml.merges[" + std::to_string(at) + "] is '" + bad + "'; expected two symbols").c_str()),
                       awq::Error);
}
