// Hostile inputs and faults, as one table: files (safetensors, GGUF, AutoAWQ checkpoints),
// writers (full disk, failing callbacks, missing directories) and numerics (NaN/Inf, fp16
// overflow while folding, bad scales). Every case must raise awq::Error whose message contains
// the expected fragment, and must leave the output directory as it was: the previous output
// file byte for byte, and no temporary or half-written file.
#include <doctest/doctest.h>

#include <Eigen/Core>

#include <csignal>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "awq/awq.hpp"
#include "awq/io/atomic_file.hpp"
#include "awq/io/awq_checkpoint.hpp"
#include "awq/io/gguf.hpp"
#include "awq/io/safetensors.hpp"
#include "awq/kernels/cpu/w4a16.hpp"
#include "gguf_writer.hpp"

namespace fs = std::filesystem;
using awq::index_t;

namespace {

std::vector<std::uint8_t> bytes_of(const std::string& s) { return std::vector<std::uint8_t>(s.begin(), s.end()); }

// A safetensors file from a header (JSON text) and a data section.
std::vector<std::uint8_t> safetensors_bytes(const std::string& header, std::size_t data_bytes) {
  std::vector<std::uint8_t> b(8 + header.size() + data_bytes, 0x11);
  const std::uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  if (!header.empty()) std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

// A valid one-linear AutoAWQ checkpoint [out = 16, in = 64], group 32, as bytes, with `edit`
// applied to the tensors before writing (to break one thing at a time).
struct CkTensors {
  std::vector<std::int64_t> qw_shape{64, 2}, qz_shape{2, 2}, sc_shape{2, 16};
  std::string qw_dtype = "I32", qz_dtype = "I32", sc_dtype = "F16";
  std::vector<Eigen::half> scales = std::vector<Eigen::half>(32, Eigen::half(0.01f));
  bool with_qzeros = true;
};

std::vector<std::uint8_t> checkpoint_bytes(const fs::path& dir, const CkTensors& t) {
  awq::io::SafetensorsWriter w;
  auto count = [](const std::vector<std::int64_t>& s) {
    std::int64_t c = 1;
    for (auto e : s) c *= e;
    return static_cast<std::size_t>(c);
  };
  w.add(std::string("l.qweight"), t.qw_dtype, t.qw_shape, std::vector<std::uint8_t>(count(t.qw_shape) * 4, 0x5A));
  if (t.with_qzeros) w.add("l.qzeros", t.qz_dtype, t.qz_shape, std::vector<std::uint8_t>(count(t.qz_shape) * 4, 0x88));
  std::vector<std::uint8_t> sc(t.scales.size() * 2);
  std::memcpy(sc.data(), t.scales.data(), sc.size());
  w.add("l.scales", t.sc_dtype, t.sc_shape, sc);
  const auto p = dir / "ck.safetensors";
  w.write(p.string());
  std::ifstream f(p, std::ios::binary);
  std::vector<std::uint8_t> b((std::istreambuf_iterator<char>(f)), {});
  fs::remove(p);
  return b;
}

std::vector<std::uint8_t> small_gguf() {  // one key: name = "awq"
  awq_test::GgufWriter w;
  w.header(3, 0, 1);
  w.str("name");
  w.put<std::uint32_t>(8);
  w.str("awq");
  return w.b;
}

// Lowers the file-size limit of this process (a full disk, as `ulimit -f` does) for its lifetime.
struct FileSizeLimit {
  rlimit saved{};
  void (*old_handler)(int) = nullptr;
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved);
    old_handler = std::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG instead of killing us
    rlimit lim = saved;
    lim.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &lim);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);
  }
};

struct FaultCase {
  const char* name;
  std::function<void(const fs::path& out)> run;  // `out` is the output file that must survive
  const char* fragment;
};

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

}  // namespace

TEST_CASE("fault table: every bad file, failed write and bad number raises awq::Error and loses nothing") {
  const fs::path root = fs::temp_directory_path() / ("awq_faults_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "scratch");
  const auto ck = [&](auto edit) {
    CkTensors t;
    edit(t);
    return checkpoint_bytes(root / "scratch", t);
  };
  const auto st_header = [](const std::string& entry, std::size_t data) {
    return safetensors_bytes("{" + entry + "}", data);
  };
  std::vector<float> big(1 << 18, 0.5f);  // 1 MiB of tensor data

  const std::vector<FaultCase> cases = {
      // ---- safetensors reader
      {"safetensors: empty file", [](const fs::path&) { awq::io::SafetensorsFile::from_bytes({}); }, "no header length"},
      {"safetensors: header length beyond the file",
       [](const fs::path&) {
         auto b = safetensors_bytes("{}", 0);
         const std::uint64_t n = 1000;
         std::memcpy(b.data(), &n, 8);
         awq::io::SafetensorsFile::from_bytes(b);
       },
       "header length 1000 exceeds the file"},
      {"safetensors: malformed JSON",
       [](const fs::path&) { awq::io::SafetensorsFile::from_bytes(safetensors_bytes("{\"a\":", 0)); }, "malformed JSON header"},
      {"safetensors: header is an array",
       [](const fs::path&) { awq::io::SafetensorsFile::from_bytes(safetensors_bytes("[1,2]", 0)); }, "not a JSON object"},
      {"safetensors: unknown dtype",
       [&](const fs::path&) {
         awq::io::SafetensorsFile::from_bytes(st_header(R"("t":{"dtype":"F8","shape":[2],"data_offsets":[0,2]})", 2));
       },
       "unknown dtype 'F8'"},
      {"safetensors: bytes do not match the shape",
       [&](const fs::path&) {
         awq::io::SafetensorsFile::from_bytes(st_header(R"("t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 8));
       },
       "byte range does not match"},
      {"safetensors: truncated data section",
       [&](const fs::path&) {
         awq::io::SafetensorsFile::from_bytes(st_header(R"("t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", 8));
       },
       "truncated"},
      {"safetensors: shape that overflows",
       [&](const fs::path&) {
         awq::io::SafetensorsFile::from_bytes(
             st_header(R"("t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]})", 4));
       },
       "is too large"},
      {"safetensors: unknown tensor name",
       [&](const fs::path&) {
         const auto f = awq::io::SafetensorsFile::from_bytes(st_header(R"("t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]})", 1));
         (void)f.tensor("model.layers.0.mlp.up_proj.weight");
       },
       "has no tensor 'model.layers.0.mlp.up_proj.weight'"},
      // ---- GGUF reader
      {"gguf: bad magic", [](const fs::path&) { awq::io::GgufFile::from_bytes(bytes_of("GGUXxxxxxxxxxxxxxxxxxxxx")); }, "not a GGUF file"},
      {"gguf: truncated",
       [](const fs::path&) {
         auto b = small_gguf();
         b.pop_back();  // the last two bytes of the last value
         b.pop_back();
         awq::io::GgufFile::from_bytes(b);
       },
       "is truncated"},
      {"gguf: string length of 2^60",
       [](const fs::path&) {
         auto b = small_gguf();
         const std::uint64_t huge = 1ull << 60;
         std::memcpy(b.data() + 24, &huge, 8);  // the first key's length
         awq::io::GgufFile::from_bytes(b);
       },
       "exceeds 1 MiB"},
      // ---- AutoAWQ checkpoint importer
      {"checkpoint: missing qzeros", [&](const fs::path&) { (void)awq::io::AwqCheckpoint::from_bytes(ck([](CkTensors& t) { t.with_qzeros = false; })).linear("l"); },
       "no tensor 'l.qzeros'"},
      {"checkpoint: scales stored as F32",
       [&](const fs::path&) {
         (void)awq::io::AwqCheckpoint::from_bytes(ck([](CkTensors& t) {
           t.sc_dtype = "BF16";
         })).linear("l");
       },
       "'l.scales' has dtype BF16, expected F16"},
      {"checkpoint: group does not divide K",
       [&](const fs::path&) {
         (void)awq::io::AwqCheckpoint::from_bytes(ck([](CkTensors& t) {
           t.sc_shape = {3, 16};
           t.qz_shape = {3, 2};
           t.scales.resize(48, Eigen::half(0.01f));
         })).linear("l");
       },
       "3 rows, which does not divide K = 64"},
      {"checkpoint: qzeros shape",
       [&](const fs::path&) { (void)awq::io::AwqCheckpoint::from_bytes(ck([](CkTensors& t) { t.qz_shape = {1, 4}; })).linear("l"); },
       "'l.qzeros' is 1 x 4, expected 2 x 2"},
      {"checkpoint: NaN scale",
       [&](const fs::path&) {
         (void)awq::io::AwqCheckpoint::from_bytes(ck([](CkTensors& t) {
           t.scales[16 + 5] = Eigen::half(std::numeric_limits<float>::quiet_NaN());
         })).linear("l");
       },
       "holds nan at group 1, output 5"},
      {"checkpoint: unknown linear",
       [&](const fs::path&) { (void)awq::io::AwqCheckpoint::from_bytes(ck([](CkTensors&) {})).linear("model.lm_head"); },
       "no tensor 'model.lm_head.qweight'"},
      // ---- writers: the previous file must survive
      {"write: disk full (file size limit)",
       [&](const fs::path& out) {
         awq::io::SafetensorsWriter w;
         w.add_typed("big", "F32", {static_cast<std::int64_t>(big.size())}, big);
         FileSizeLimit limit(64 * 1024);
         w.write(out.string());
       },
       "disk full or file size limit"},
      {"write: the writer callback fails half way",
       [&](const fs::path& out) {
         awq::io::write_atomically(out.string(), [&](awq::io::FileSink& s) {
           s.write(big.data(), 4096);
           throw awq::Error("awq test: producer failed after 4096 bytes");
         });
       },
       "producer failed after 4096 bytes"},
      {"write: missing directory",
       [&](const fs::path& out) {
         awq::io::SafetensorsWriter w;
         w.add_typed("x", "F32", {1}, std::vector<float>{1.0f});
         w.write((out.parent_path() / "no_such_dir" / "x.safetensors").string());
       },
       "cannot create"},
      {"write: a tensor added twice",
       [&](const fs::path&) {
         awq::io::SafetensorsWriter w;
         w.add_typed("x", "F32", {1}, std::vector<float>{1.0f});
         w.add_typed("x", "F32", {1}, std::vector<float>{2.0f});
       },
       "added twice"},
      // ---- numerics
      {"fold: fp16 norm weight overflows",
       [&](const fs::path&) {
         std::vector<Eigen::half> ln(8, Eigen::half(2.0f));
         std::vector<float> s(8, 1.0f);
         s[6] = 1e-5f;  // 2 / 1e-5 = 200000 > 65504
         const auto before = ln;
         try {
           awq::fold_into_norm(awq::make_vector(ln.data(), 8), awq::VectorView<Eigen::half>{}, awq::make_vector<const float>(s.data(), 8));
         } catch (...) {
           CHECK(std::memcmp(ln.data(), before.data(), 16) == 0);  // all or nothing
           throw;
         }
       },
       "at (0, 6) 200000, which is not finite as float16; nothing was changed"},
      {"fold: fp16 weight overflows when scaling inputs",
       [&](const fs::path&) {
         std::vector<Eigen::half> w(4 * 8, Eigen::half(1000.0f));
         std::vector<float> s(8, 1.0f);
         s[3] = 100.0f;
         awq::scale_linear_inputs(awq::make_row_major(w.data(), 4, 8), awq::make_vector<const float>(s.data(), 8));
       },
       "weight at (0, 3) 100000"},
      {"fold: zero scale", [&](const fs::path&) {
         std::vector<float> x(16, 1.0f), s(4, 1.0f);
         s[2] = 0.0f;
         awq::scale_activations(awq::make_row_major(x.data(), 4, 4), awq::make_vector<const float>(s.data(), 4));
       },
       "scale 0 at channel 2"},
      {"stats: Inf activation",
       [&](const fs::path&) {
         std::vector<float> x(4 * 8, 1.0f);
         x[2 * 8 + 7] = std::numeric_limits<float>::infinity();
         awq::ActStats st(8);
         st.update(awq::make_row_major<const float>(x.data(), 4, 8));
       },
       "token 2"},
      {"search: NaN in calibration activations",
       [&](const fs::path&) {
         std::vector<float> x(16 * 64, 0.5f), w(8 * 64, 0.25f);
         x[3 * 64 + 9] = std::nanf("");
         std::vector<awq::Linear<float>> lin{{awq::make_row_major<const float>(w.data(), 8, 64), nullptr}};
         awq::ScaleSearchOptions opt;
         opt.quant = awq::QuantSpec{4, 32, true};
         (void)awq::search_scales(awq::make_row_major<const float>(x.data(), 16, 64), lin, awq::LinearsBlock<float>(lin), opt);
       },
       "nan"},
  };

  const auto& table = cases;
  CHECK(table.size() >= 25);

  const std::string previous = "PREVIOUS CONTENTS, must survive";
  for (const auto& c : table) {
    CAPTURE(c.name);
    const fs::path dir = root / "out";
    fs::remove_all(dir);
    fs::create_directories(dir);
    const fs::path out = dir / "model.safetensors";
    {
      std::ofstream f(out, std::ios::binary);
      f << previous;
    }
    bool threw = false;
    try {
      c.run(out);
    } catch (const awq::Error& e) {
      threw = true;
      CHECK_MESSAGE(std::string(e.what()).find(c.fragment) != std::string::npos, e.what());
    }
    CHECK(threw);
    CHECK(read_file(out) == previous);
    std::vector<std::string> left;
    for (const auto& entry : fs::directory_iterator(dir)) left.push_back(entry.path().filename().string());
    CHECK(left == std::vector<std::string>{"model.safetensors"});  // no .tmp, nothing half-written
  }
  fs::remove_all(root);
}

TEST_CASE("numeric guards: zero and constant channels give finite scales, codes and folds") {
  const index_t t = 32, k = 64, n = 16;
  std::mt19937_64 rng(9);
  std::normal_distribution<float> d;
  std::vector<float> x(static_cast<std::size_t>(t * k)), w(static_cast<std::size_t>(n * k));
  for (auto& v : x) v = d(rng);
  for (auto& v : w) v = d(rng);
  for (index_t r = 0; r < t; ++r) x[static_cast<std::size_t>(r * k + 3)] = 0.0f;  // a dead channel
  for (index_t c = 0; c < 32; ++c) w[static_cast<std::size_t>(5 * k + c)] = 0.125f;  // a constant group
  for (index_t c = 32; c < 64; ++c) w[static_cast<std::size_t>(6 * k + c)] = 0.0f;  // an all-zero group
  std::vector<awq::Linear<float>> lin{{awq::make_row_major<const float>(w.data(), n, k), nullptr}};
  awq::ScaleSearchOptions opt;
  opt.quant = awq::QuantSpec{4, 32, true};
  const auto r = awq::search_scales(awq::make_row_major<const float>(x.data(), t, k), lin, awq::LinearsBlock<float>(lin), opt);
  for (float s : r.scales) CHECK((std::isfinite(s) && s > 0.0f));
  for (double l : r.losses) CHECK(std::isfinite(l));
  std::vector<float> out(w.size());
  awq::pseudo_quantize(awq::QuantSpec{4, 32, true}, awq::make_row_major<const float>(w.data(), n, k), awq::make_row_major(out.data(), n, k));
  for (float v : out) CHECK(std::isfinite(v));
  CHECK(out[static_cast<std::size_t>(6 * k + 40)] == 0.0f);
}

TEST_CASE("checkpoint importer: a valid AutoAWQ file reads back, dequantizes and runs in the W4A16 kernel") {
  const fs::path dir = fs::temp_directory_path() / ("awq_ck_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  CkTensors t;
  std::mt19937 rng(4);
  for (auto& s : t.scales) s = Eigen::half(0.001f + 0.0001f * static_cast<float>(rng() % 100));
  const auto ckb = checkpoint_bytes(dir, t);
  fs::remove_all(dir);
  const auto ck = awq::io::AwqCheckpoint::from_bytes(ckb);
  REQUIRE(ck.linears() == std::vector<std::string>{"l"});
  const auto L = ck.linear("l");
  CHECK(L.k == 64);
  CHECK(L.n == 16);
  CHECK(L.group == 32);
  std::vector<float> w(static_cast<std::size_t>(L.n * L.k));
  L.dequantize(awq::make_row_major(w.data(), L.n, L.k));
  // 0x5A5A5A5A: nibbles 10, 5 alternating; 0x88888888: zeros 8. Column 8c + order[i] gets nibble i.
  for (index_t col = 0; col < 16; ++col) {
    const int nib = awq::kAwqUnpackOrder[static_cast<std::size_t>(col % 8)];
    const float q = (nib % 2 == 0) ? 10.0f : 5.0f;
    CHECK(w[static_cast<std::size_t>(col * 64 + 40)] == (q - 8.0f) * static_cast<float>(L.scales[static_cast<std::size_t>(16 + col)]));
  }
  std::vector<float> x(64), y(16, std::nanf(""));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.3f * static_cast<float>(i));
  awq::w4a16_gemm(awq::make_row_major<const float>(x.data(), 1, 64), L.view(), awq::make_row_major(y.data(), 1, 16));
  for (index_t c = 0; c < 16; ++c) {
    double ref = 0, mag = 0;
    for (index_t k = 0; k < 64; ++k) {
      ref += static_cast<double>(x[static_cast<std::size_t>(k)]) * w[static_cast<std::size_t>(c * 64 + k)];
      mag += std::abs(static_cast<double>(x[static_cast<std::size_t>(k)]) * w[static_cast<std::size_t>(c * 64 + k)]);
    }
    CHECK(std::abs(y[static_cast<std::size_t>(c)] - ref) <= 1e-5 * mag);
  }
}

TEST_CASE("a process killed (SIGKILL) in the middle of writing leaves the previous file intact") {
  const fs::path dir = fs::temp_directory_path() / ("awq_kill_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "model.safetensors").string();
  std::vector<float> old_values(1000);
  for (std::size_t i = 0; i < old_values.size(); ++i) old_values[i] = static_cast<float>(i) * 0.5f;
  awq::io::SafetensorsWriter before;
  before.add_typed("w", "F32", {1000}, old_values);
  before.write(path);
  const auto old_bytes = read_file(path);

  int pipe_fd[2];
  REQUIRE(::pipe(pipe_fd) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // the writer: signals once it is half way through a slow 8 MiB write, then keeps writing
    ::close(pipe_fd[0]);
    try {
      awq::io::write_atomically(path, [&](awq::io::FileSink& out) {
        std::vector<char> chunk(64 * 1024, 'x');
        for (int i = 0; i < 128; ++i) {
          out.write(chunk.data(), chunk.size());
          if (i == 64) {
            std::fflush(nullptr);
            const char c = 1;
            (void)!::write(pipe_fd[1], &c, 1);
          }
          if (i > 64) ::usleep(20000);  // the parent kills it here
        }
      });
    } catch (...) {
    }
    ::_exit(0);
  }
  ::close(pipe_fd[1]);
  char c = 0;
  REQUIRE(::read(pipe_fd[0], &c, 1) == 1);
  ::close(pipe_fd[0]);
  REQUIRE(::kill(child, SIGKILL) == 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(read_file(path) == old_bytes);  // the killed write never touched the file
  const auto f = awq::io::SafetensorsFile::open(path);
  CHECK(f.tensor("w").data.size() == 4000);
  // The next write replaces the stale temporary file and lands whole.
  awq::io::SafetensorsWriter after;
  after.add_typed("w", "F32", {2}, std::vector<float>{1.0f, 2.0f});
  after.write(path);
  CHECK(awq::io::SafetensorsFile::open(path).tensor("w").data.size() == 8);
  CHECK_FALSE(fs::exists(awq::io::atomic_temp(path)));
  fs::remove_all(dir);
}

TEST_CASE("atomic writes: a pipe or directory target is refused, a link keeps pointing at its file, no user file is touched") {
  const fs::path dir = fs::temp_directory_path() / ("awq_targets_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto write = [](const fs::path& p, const std::string& text) {
    awq::io::write_atomically(p.string(), [&](awq::io::FileSink& out) { out.write(text); });
  };
  // A pipe (as a device would be): refused before anything is written, and still a pipe.
  const fs::path fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(write(fifo, "report"), doctest::Contains("exists and is not a regular file"), awq::Error);
  CHECK(fs::is_fifo(fifo));
  CHECK_FALSE(fs::exists(awq::io::atomic_temp(fifo.string())));
  fs::create_directories(dir / "sub");
  CHECK_THROWS_WITH_AS(write(dir / "sub", "report"), doctest::Contains("is not a regular file"), awq::Error);
  CHECK(fs::is_directory(dir / "sub"));
  // A link: the file it points to gets the new contents, the link stays, with the file's permissions.
  const fs::path real = dir / "real.json", link = dir / "link.json";
  write(real, "old");
  fs::permissions(real, fs::perms::owner_read | fs::perms::owner_write);
  fs::create_symlink(real, link);
  write(link, "new");
  CHECK(fs::is_symlink(link));
  CHECK(read_file(real) == "new");
  CHECK((fs::status(real).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
  // The temporary name is a hidden sibling: a user's PATH.tmp is left alone; a directory in the
  // temporary's place is refused by the check a tool runs before long work.
  const fs::path out = dir / "out.json";
  std::ofstream(dir / "out.json.tmp") << "precious";
  write(out, "{}");
  CHECK(read_file(dir / "out.json.tmp") == "precious");
  CHECK(awq::io::atomic_temp(out.string()) == (dir / ".out.json.awq-tmp").string());
  CHECK_FALSE(fs::exists(awq::io::atomic_temp(out.string())));
  fs::create_directories(awq::io::atomic_temp(out.string()));
  CHECK_THROWS_WITH_AS(awq::io::check_atomic_target(out.string()), doctest::Contains("is taken by something other than a file"), awq::Error);
  fs::remove_all(dir);
}
