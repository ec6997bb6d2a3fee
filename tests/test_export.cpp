// The streamed Hugging Face export (examples/llama/export.hpp over io::ShardedSafetensorsWriter)
// on a small synthetic model: sharded and single-file exports read back through io::HfCheckpoint
// equal, tensor for tensor, and equal what the driver handed over; the index is consistent; an
// export interrupted mid-run leaves the previous one in place, and the run resumed from its
// checkpoint writes the same bytes as an uninterrupted one; the writer's memory stays flat.
#include <doctest/doctest.h>

#include <awq/io/hf_checkpoint.hpp>
#include <awq/io/safetensors_sharded.hpp>
#include <awq/model/arch/llama.hpp>
#include <awq/model/checkpoint.hpp>
#include <awq/model/hf_source.hpp>
#include <awq/model/pipeline.hpp>
#include <awq/pack.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llama/export.hpp"
#include "support.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AWQ_EXPORT_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(AWQ_EXPORT_TEST_ASAN)
#define AWQ_EXPORT_TEST_ASAN 1
#endif

namespace fs = std::filesystem;
using awq::model::Llama;

namespace {

// A fresh directory under the system's temporary one, removed with the object.
struct Scratch {
  fs::path path;
  explicit Scratch(const std::string& tag) : path(fs::temp_directory_path() / ("awq_export_" + tag + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Every file of `dir` by name (hidden ones included) with its bytes.
std::map<std::string, std::string> files_of(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::directory_iterator(dir)) m[e.path().filename().string()] = slurp(e.path());
  return m;
}

// A 3-block Llama with GQA and an untied lm_head, random fp32 weights, one shard per block.
awq::model::ModelConfig write_model(const fs::path& dir) {
  awq::model::ModelConfig c;
  c.architecture = "llama";
  c.hidden = 64, c.intermediate = 128, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 16, c.layers = 3, c.vocab = 96;
  const nlohmann::json cfg = {{"model_type", "llama"}, {"hidden_size", c.hidden}, {"intermediate_size", c.intermediate},
                              {"num_attention_heads", c.n_heads}, {"num_key_value_heads", c.n_kv_heads}, {"num_hidden_layers", c.layers},
                              {"vocab_size", c.vocab}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"tie_word_embeddings", false}};
  std::ofstream(dir / "config.json") << cfg.dump();
  awq::io::ShardedSafetensorsWriter w(dir.string(), 1);  // a tensor a shard
  std::uint64_t seed = 77;
  const auto add = [&](const std::string& name, const std::vector<std::int64_t>& shape) {
    const long rows = static_cast<long>(shape[0]), cols = shape.size() > 1 ? static_cast<long>(shape[1]) : 1;
    const auto v = awq_test::random_weights(rows, cols, awq_test::Dist::outliers, seed++, shape.size() > 1 ? 0.05 : 0.2);
    std::vector<float> f(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) f[i] = static_cast<float>(shape.size() > 1 ? v[i] : 1.0 + v[i]);
    w.add_typed(name, "F32", shape, f);
  };
  for (int l = 0; l < c.layers; ++l)
    for (const auto& t : Llama::block_tensors(c)) add(Llama::block_prefix(l) + t.name, t.shape);
  add(Llama::embed_name, {c.vocab, c.hidden});
  add(Llama::final_norm_name, {c.hidden});
  add("lm_head.weight", {c.vocab, c.hidden});
  w.finish();
  return c;
}

struct Crash {};

// Quantizes `src` (W4 g64) into an HfExport of `dir` as the job does, block by block; the sink
// throws Crash after block `crash_after` when it is >= 0. Returns the blocks resumed.
int export_model(const awq::model::HfSource& src, const fs::path& dir, std::uint64_t shard_bytes,
                 const awq::model::BlockCheckpoint* ck = nullptr, int crash_after = -1,
                 std::vector<awq::model::QuantizedBlock>* blocks = nullptr) {
  const auto& c = src.config();
  const awq::model::Batch calib{2, 16};
  std::vector<float> h(static_cast<std::size_t>(calib.tokens() * c.hidden));
  const auto r = awq_test::random_weights(1, static_cast<long>(h.size()), awq_test::Dist::outliers, 5, 1.0);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>(r[i]);
  std::vector<awq::model::Stream> none;
  awq::model::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{4, 64, true};
  opt.checkpoint = ck;
  awq_example::HfExport ex(dir.string(), opt.block.quant, shard_bytes);
  const auto res = awq::model::quantize_model<awq::backend::cpu, Llama>(src, calib, h, none, opt, [&](const awq::model::QuantizedBlock& b) {
    ex.add_block(b);
    if (blocks) blocks->push_back(b);
    if (b.index == crash_after) throw Crash{};
  });
  ex.add_tensor(Llama::embed_name, {c.vocab, c.hidden}, src.load(Llama::embed_name, {c.vocab, c.hidden}));
  ex.add_tensor(Llama::final_norm_name, {c.hidden}, src.load(Llama::final_norm_name, {c.hidden}));
  ex.add_tensor("lm_head.weight", {c.vocab, c.hidden}, src.load("lm_head.weight", {c.vocab, c.hidden}));
  ex.finish(nlohmann::ordered_json::parse(src.config_json().dump()), {{"tokenizer.json", {{"version", "1.0"}}}});
  return res.resumed;
}

// A size field of /proc/self/status ("VmHWM:" the peak resident set, "VmRSS:" the current one) in bytes; 0 elsewhere.
std::uint64_t status_bytes(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(std::string(key).size())) * 1024;
  return 0;
}
// Resets the peak (Linux 4.0+); false where that is refused or did not take.
bool reset_peak() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5" << std::flush;
  return f && status_bytes("VmHWM:") <= status_bytes("VmRSS:") + (std::uint64_t{1} << 20);
}

}  // namespace

namespace {

/// A checkpoint writer that keeps what it is given (write_linear's Writer contract).
struct RecordingWriter {
  struct Entry {
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;
  };
  std::map<std::string, Entry> t;
  template <class T>
  void add_typed(const std::string& name, const std::string& dtype, const std::vector<std::int64_t>& shape, const std::vector<T>& v) {
    REQUIRE(t.count(name) == 0);
    Entry e{dtype, shape, std::vector<std::uint8_t>(v.size() * sizeof(T))};
    std::memcpy(e.bytes.data(), v.data(), e.bytes.size());
    t[name] = std::move(e);
  }
  template <class T>
  std::vector<T> values(const std::string& name) const {
    const Entry& e = t.at(name);
    std::vector<T> v(e.bytes.size() / sizeof(T));
    std::memcpy(v.data(), e.bytes.data(), e.bytes.size());
    return v;
  }
};

}  // namespace

TEST_CASE("write_block: 4-bit linears in the AutoAWQ GEMM layout, other widths in the plain layout, the rest in fp16") {
  const awq::index_t out = 48, in = 128;
  for (const int bits : {4, 3}) {
    CAPTURE(bits);
    const awq::QuantSpec spec{bits, 32, true};
    auto wd = awq_test::random_weights(out, in, awq_test::Dist::outliers, 500 + static_cast<std::uint64_t>(bits));
    std::vector<float> w(wd.begin(), wd.end());
    awq::model::QuantizedBlock b;
    b.prefix = "model.layers.2.";
    b.linears["mlp.up_proj"] = awq::model::finalize_linear(awq::make_row_major(w.data(), out, in), spec);
    b.tensors["post_attention_layernorm.weight"] = {0.5f, -1.25f, 3.0f};
    b.shapes["post_attention_layernorm.weight"] = {3};
    const awq::model::QuantizedLinear& q = b.linears.at("mlp.up_proj");
    CHECK(q.bits == bits);
    RecordingWriter rw;
    awq::model::write_block(rw, b);
    const std::string p = "model.layers.2.mlp.up_proj";
    REQUIRE(rw.t.size() == 4);
    // The codes as written, [out, in], and the zeros [out, groups], unpacked from either layout.
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(out * in)), zeros(static_cast<std::size_t>(out * q.groups));
    std::vector<Eigen::half> scales = rw.values<Eigen::half>(p + ".scales");
    if (bits == 4) {
      CHECK(rw.t.at(p + ".qweight").dtype == "I32");
      CHECK(rw.t.at(p + ".qweight").shape == std::vector<std::int64_t>{in, out / 8});
      CHECK(rw.t.at(p + ".scales").shape == std::vector<std::int64_t>{q.groups, out});
      const auto qw = rw.values<std::int32_t>(p + ".qweight"), qz = rw.values<std::int32_t>(p + ".qzeros");
      awq::unpack_awq_gemm(awq::make_row_major(qw.data(), in, out / 8), awq::make_row_major(codes.data(), out, in));
      awq::unpack_awq_gemm(awq::make_row_major(qz.data(), q.groups, out / 8), awq::make_row_major(zeros.data(), out, q.groups));
      std::vector<Eigen::half> st(scales.size());  // [groups, out] → [out, groups]
      for (awq::index_t r = 0; r < out; ++r)
        for (awq::index_t g = 0; g < q.groups; ++g) st[static_cast<std::size_t>(r * q.groups + g)] = scales[static_cast<std::size_t>(g * out + r)];
      scales = st;
    } else {
      const awq::index_t rb = awq::plain_row_bytes(in, bits);
      CHECK(rw.t.at(p + ".qweight").dtype == "U8");
      CHECK(rw.t.at(p + ".qweight").shape == std::vector<std::int64_t>{out, rb});
      CHECK(rw.t.at(p + ".scales").shape == std::vector<std::int64_t>{out, q.groups});
      const auto qw = rw.values<std::uint8_t>(p + ".qweight");
      awq::unpack_plain(bits, awq::make_row_major(qw.data(), out, rb), awq::make_row_major(codes.data(), out, in));
      zeros = rw.values<std::uint8_t>(p + ".qzeros");
    }
    CHECK(codes == q.codes);
    CHECK(zeros == q.zeros);
    CHECK(std::equal(scales.begin(), scales.end(), q.scales.begin(), [](Eigen::half x, Eigen::half y) {
      return Eigen::numext::bit_cast<std::uint16_t>(x) == Eigen::numext::bit_cast<std::uint16_t>(y);
    }));
    // What they dequantize to is the weight finalize left in w, to float rounding.
    double worst = 0;
    for (awq::index_t r = 0; r < out; ++r)
      for (awq::index_t c = 0; c < in; ++c) {
        const std::size_t g = static_cast<std::size_t>(r * q.groups + c / (in / q.groups));
        const double v = (double(codes[static_cast<std::size_t>(r * in + c)]) - zeros[g]) * double(static_cast<float>(scales[g]));
        worst = std::max(worst, std::fabs(v - w[static_cast<std::size_t>(r * in + c)]));
      }
    CHECK(worst <= 1e-6);
    CHECK(rw.t.at("model.layers.2.post_attention_layernorm.weight").dtype == "F16");
    CHECK(rw.values<Eigen::half>("model.layers.2.post_attention_layernorm.weight")[1] == Eigen::half(-1.25f));
    // A linear must say its width; its packer takes no other.
    awq::model::QuantizedLinear unset = q;
    unset.bits = 0;
    RecordingWriter none;
    CHECK_THROWS_WITH_AS(awq::model::write_linear(none, "x", unset), doctest::Contains("'x' has bits 0"), awq::Error);
    if (bits == 4)
      CHECK_THROWS_WITH_AS((void)awq::model::pack_awq_gemm(q, 3), doctest::Contains("bits 3 for a 4-bit linear"), awq::Error);
  }
}

TEST_CASE("export: a sharded export reads back equal to a single-file one and to the driver's blocks, the index is consistent") {
  Scratch s("shards");
  fs::create_directories(s.path / "model");
  const auto c = write_model(s.path / "model");
  const auto src = awq::model::HfSource::open((s.path / "model").string());
  std::vector<awq::model::QuantizedBlock> blocks;
  export_model(src, s.path / "one", awq_example::kDefaultShardBytes, nullptr, -1, &blocks);
  const std::uint64_t limit = 6000;
  export_model(src, s.path / "many", limit);
  CHECK(!fs::exists(awq_example::HfExport::sibling((s.path / "one").string(), "tmp")));
  CHECK(!fs::exists(awq_example::HfExport::sibling((s.path / "many").string(), "tmp")));

  const auto one = files_of(s.path / "one"), many = files_of(s.path / "many");
  std::vector<std::string> listing;
  for (const auto& [name, bytes] : one) listing.push_back(name);
  CHECK(listing == std::vector<std::string>{"config.json", "model.safetensors", "tokenizer.json"});
  std::set<std::string> shard_files;
  for (const auto& [name, bytes] : many) {
    CHECK(name[0] != '.');  // no temporary left
    if (awq::io::detail::is_shard_name(name)) shard_files.insert(name);
  }
  MESSAGE(shard_files.size() << " shards of at most " << limit << " bytes of tensors");
  CHECK(shard_files.size() >= 4);
  CHECK(many.count("model.safetensors.index.json") == 1);
  CHECK(many.count("model.safetensors") == 0);
  CHECK(one.at("config.json") == many.at("config.json"));

  // Index: every tensor in exactly one shard, the one the index names; total_size the sum.
  const auto index = nlohmann::json::parse(many.at("model.safetensors.index.json"));
  const auto& map = index.at("weight_map");
  std::uint64_t total = 0;
  std::set<std::string> seen;
  for (const auto& f : shard_files) {
    const auto h = awq::io::detail::read_safetensors_header((s.path / "many" / f).string());
    CHECK(h.metadata.at("format") == "pt");
    std::uint64_t bytes = 0;
    for (const auto& entry : h.tensors) {
      const std::string& name = entry.first;
      CAPTURE(name);
      CHECK(seen.insert(name).second);
      CHECK(map.at(name).get<std::string>() == f);
      bytes += entry.second.end - entry.second.begin;
    }
    CHECK((bytes <= limit || h.tensors.size() == 1));
    CHECK(h.data_end == h.file_size);
    total += bytes;
  }
  CHECK(seen.size() == map.size());
  CHECK(index.at("metadata").at("total_size").get<std::uint64_t>() == total);

  // Tensor for tensor, the two exports agree.
  const auto a = awq::io::HfCheckpoint::open((s.path / "one").string()), b = awq::io::HfCheckpoint::open((s.path / "many").string());
  REQUIRE(a.names() == b.names());
  CHECK(a.names().size() == seen.size());
  CHECK(a.names().size() == static_cast<std::size_t>(c.layers) * (7 * 3 + 2) + 3);  // qweight/qzeros/scales, 2 norms; embed, norm, head
  for (const auto& name : a.names()) {
    CAPTURE(name);
    const auto ta = a.tensor(name), tb = b.tensor(name);
    CHECK(ta.dtype == tb.dtype);
    CHECK(ta.shape == tb.shape);
    CHECK(ta.data == tb.data);
  }

  // And they hold what the driver handed over: block 1's codes through the AutoAWQ unpacking, its
  // fp16 scales and folded norm.
  REQUIRE(blocks.size() == 3);
  const auto& q = blocks[1].linears.at("self_attn.k_proj");
  const auto qw = b.tensor("model.layers.1.self_attn.k_proj.qweight");
  REQUIRE(qw.dtype == "I32");
  REQUIRE(qw.shape == std::vector<std::int64_t>{q.in, q.out / 8});
  std::vector<std::int32_t> words(qw.data.size() / 4);
  std::memcpy(words.data(), qw.data.data(), qw.data.size());
  std::vector<std::uint8_t> codes(q.codes.size(), 0xFF);
  awq::unpack_awq_gemm(awq::make_row_major<const std::int32_t>(words.data(), q.in, q.out / 8), awq::make_row_major(codes.data(), q.out, q.in));
  CHECK(codes == q.codes);
  const auto sc = b.load_f32("model.layers.1.self_attn.k_proj.scales", {q.groups, q.out});
  for (awq::index_t r = 0; r < q.out; ++r)
    for (awq::index_t g = 0; g < q.groups; ++g)
      REQUIRE(sc[static_cast<std::size_t>(g * q.out + r)] == static_cast<float>(q.scales[static_cast<std::size_t>(r * q.groups + g)]));
  const auto norm = b.load_f32("model.layers.1.post_attention_layernorm.weight", {c.hidden});
  const auto& want = blocks[1].tensors.at("post_attention_layernorm.weight");
  for (std::size_t i = 0; i < norm.size(); ++i) REQUIRE(norm[i] == static_cast<float>(Eigen::half(want[i])));
  const auto cfg = nlohmann::json::parse(many.at("config.json"));
  CHECK(cfg.at("quantization_config").at("bits") == 4);
  CHECK(cfg.at("quantization_config").at("version") == "gemm");
  CHECK(cfg.at("num_hidden_layers") == 3);
}

TEST_CASE("export: interrupted mid-run the old export stays, resumed from the checkpoint, the bytes equal an uninterrupted run") {
  Scratch s("resume");
  fs::create_directories(s.path / "model");
  write_model(s.path / "model");
  const auto src = awq::model::HfSource::open((s.path / "model").string());
  const std::uint64_t limit = 12000;
  export_model(src, s.path / "plain", limit);  // no checkpoint at all
  const auto want = files_of(s.path / "plain");
  CHECK(want.size() > 5);

  // An uninterrupted run with a checkpoint gives the same bytes.
  fs::create_directories(s.path / "ck_full");
  const awq::model::BlockCheckpoint full((s.path / "ck_full").string(), "synthetic w4 g64");
  CHECK(export_model(src, s.path / "full", limit, &full) == 0);
  CHECK(files_of(s.path / "full") == want);
  // A second run resumes every block and still gives the same bytes.
  CHECK(export_model(src, s.path / "full", limit, &full) == 3);
  CHECK(files_of(s.path / "full") == want);

  // The destination holds an older export, and a killed run left its temporary directory.
  const fs::path dst = s.path / "dst";
  export_model(src, dst, awq_example::kDefaultShardBytes);
  const auto before = files_of(dst);
  const fs::path dst_tmp = awq_example::HfExport::sibling(dst.string(), "tmp");
  CHECK(dst_tmp == s.path / ".dst.awq-tmp");
  fs::create_directories(dst_tmp);
  std::ofstream(dst_tmp / "model-00001-of-00002.safetensors") << "left by a killed run";
  // Names a user may have beside the export are not the export's.
  fs::create_directories(s.path / "dst.tmp");
  fs::create_directories(s.path / "dst.old");
  fs::create_directories(s.path / "ck");
  const awq::model::BlockCheckpoint ck((s.path / "ck").string(), "synthetic w4 g64");
  CHECK_THROWS_AS(export_model(src, dst, limit, &ck, 1), Crash);  // crashes after two blocks
  CHECK(files_of(dst) == before);                                  // the old export, untouched
  // An export into directories it had to make takes them away again when it does not finish.
  CHECK_THROWS_AS(export_model(src, s.path / "new" / "deeper" / "dst", limit, nullptr, 0), Crash);
  CHECK(!fs::exists(s.path / "new"));
  CHECK(!fs::exists(dst_tmp));
  CHECK(ck.has(0));
  CHECK(ck.has(1));
  CHECK(!ck.has(2));
  CHECK(export_model(src, dst, limit, &ck) == 2);
  CHECK(files_of(dst) == want);
  CHECK(!fs::exists(dst_tmp));
  CHECK(!fs::exists(awq_example::HfExport::sibling(dst.string(), "old")));
  CHECK(fs::is_directory(s.path / "dst.tmp"));
  CHECK(fs::is_directory(s.path / "dst.old"));
}

TEST_CASE("export: the sharded writer streams, its resident memory does not grow with the data written") {
  Scratch s("rss");
  const std::size_t tensor_bytes = std::size_t{1} << 20, n_tensors = 64;  // 64 MiB in 1 MiB tensors
  std::vector<std::uint8_t> t(tensor_bytes);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::uint8_t>(i * 2654435761u >> 13);
  const bool measured = reset_peak();
  const std::uint64_t rss0 = status_bytes("VmRSS:");
  {
    awq::io::ShardedSafetensorsWriter w(s.path.string(), 24u << 20);  // three shards
    for (std::size_t i = 0; i < n_tensors; ++i) {
      t[0] = static_cast<std::uint8_t>(i);
      w.add("t." + std::to_string(i), "U8", {static_cast<std::int64_t>(tensor_bytes)}, t);
    }
    CHECK(w.finish().size() == 4);
  }
  const std::uint64_t peak = status_bytes("VmHWM:");
  std::ofstream(s.path / "config.json") << "{}";
  const auto ck = awq::io::HfCheckpoint::open(s.path.string());
  CHECK(ck.names().size() == n_tensors);
  CHECK(ck.tensor("t.63").data[0] == 63);
  if (!measured || rss0 == 0 || peak == 0) {
    MESSAGE("no /proc/self/clear_refs: the peak is not measured");
    return;
  }
  MESSAGE("64 MiB written; peak RSS grew by " << (peak > rss0 ? (peak - rss0) >> 10 : 0) << " KiB");
#ifndef AWQ_EXPORT_TEST_ASAN
  CHECK(peak < rss0 + (12u << 20));  // the data were never held: one tensor and the copy buffer
#endif
}
