// awq_llama's command line (examples/cli): the UTF-8 check of its texts, strict integers, the
// option parser's messages. The tool's exit codes and messages end to end: tests/cli/run_cli_tests.sh.
#include <doctest/doctest.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <stdexcept>
#include <system_error>
#include <string>
#include <vector>

#include <unistd.h>

#include "cli/options.hpp"
#include "cli/text.hpp"

namespace {

awq_cli::Utf8Error utf8(const std::string& s) { return awq_cli::check_utf8(s); }

awq_cli::Args parse(std::vector<std::string> args) {
  args.insert(args.begin(), "awq_llama");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return awq_cli::parse(static_cast<int>(argv.size()), argv.data());
}

std::vector<std::string> required(std::vector<std::string> extra) {
  std::vector<std::string> a{"--model", "m.gguf", "--calib-text", "c.txt", "--eval-text", "e.txt"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

}  // namespace

TEST_CASE("check_utf8 accepts every valid form and finds the first invalid byte") {
  CHECK(!utf8(""));
  CHECK(!utf8("plain ASCII\n"));
  CHECK(!utf8("\xC3\xBC"));                      // ü, 2 bytes
  CHECK(!utf8("\xE2\x82\xAC"));                  // €, 3 bytes
  CHECK(!utf8("\xF0\x9F\x98\x80"));              // U+1F600, 4 bytes
  CHECK(!utf8("\xEF\xBF\xBF\xF4\x8F\xBF\xBF"));  // U+FFFF, U+10FFFF (the largest)
  CHECK(!utf8("\xED\x9F\xBF\xEE\x80\x80"));      // U+D7FF, U+E000 around the surrogates

  struct Bad {
    std::string text;
    std::size_t offset;
    const char* reason;
  };
  const std::vector<Bad> bad = {
      {"caf\xE9 au lait", 3, "lead byte 0xE9 followed by 0x20"},  // Latin-1 é
      {"Gr\xFC\xDF", 2, "byte 0xFC never occurs"},                // Latin-1 üß
      {"ab\xC0\xAF", 2, "overlong"},                              // 2-byte overlong '/'
      {"\xE0\x80\xAF", 0, "overlong encoding of U+002F"},         // 3-byte overlong
      {"x\xF0\x80\x80\xAF", 1, "overlong encoding of U+002F"},    // 4-byte overlong
      {"\xED\xA0\x80", 0, "surrogate U+D800"},                    // high surrogate
      {"ok \xED\xBF\xBF", 3, "surrogate U+DFFF"},                 // low surrogate
      {"\xF4\x90\x80\x80", 0, "above U+10FFFF"},
      {"\xF5\x80\x80\x80", 0, "byte 0xF5 never occurs"},
      {"end \xE2\x82", 4, "truncated"},
      {"\xF0\x9F\x98", 0, "truncated"},
      {"\x80 stray", 0, "continuation byte 0x80 with no lead byte"},
      {"\xC3\xBC\xC3", 2, "truncated"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.text);
    const auto e = utf8(b.text);
    REQUIRE(static_cast<bool>(e));
    CHECK(e.offset == b.offset);
    CHECK(e.reason.find(b.reason) != std::string::npos);
  }
}

TEST_CASE("parse_int takes whole decimal integers in range and names the flag otherwise") {
  CHECK(awq_cli::parse_int("--n", "0", 0, 10, "0..10") == 0);
  CHECK(awq_cli::parse_int("--n", "10", 0, 10, "0..10") == 10);
  CHECK(awq_cli::parse_int("--n", "-3", -5, 10, "x") == -3);
  CHECK(awq_cli::parse_int("--n", "2147483647", 0, INT_MAX, "x") == INT_MAX);
  auto fails = [](const std::string& v, const std::string& msg) {
    CAPTURE(v);
    CHECK_THROWS_WITH_AS(awq_cli::parse_int("--seq-len", v, 2, 100, "2 to 100"), doctest::Contains(msg.c_str()), awq::Error);
  };
  fails("abc", "--seq-len: 'abc' is not a whole number (accepted: 2 to 100)");
  fails("", "is not a whole number");
  fails("12x", "'12x' is not a whole number");
  fails(" 12", "is not a whole number");
  fails("12 ", "is not a whole number");
  fails("+12", "is not a whole number");
  fails("1.5", "is not a whole number");
  fails("0x10", "is not a whole number");
  fails("-", "is not a whole number");
  fails("--5", "is not a whole number");
  fails("0", "--seq-len: 0 is out of range (accepted: 2 to 100)");
  fails("-5", "-5 is out of range");
  fails("101", "101 is out of range");
  fails("99999999999999999999", "99999999999999999999 is out of range");
  fails("-99999999999999999999", "is out of range");
}

TEST_CASE("--shard-size: bytes, decimal and binary units in any case, 1 KB to 1 TB") {
  CHECK(awq_cli::parse_size("--s", "1000") == 1000);
  CHECK(awq_cli::parse_size("--s", "4096B") == 4096);
  CHECK(awq_cli::parse_size("--s", "8KB") == 8000);
  CHECK(awq_cli::parse_size("--s", "500mb") == 500000000);
  CHECK(awq_cli::parse_size("--s", "5GB") == 5000000000ull);
  CHECK(awq_cli::parse_size("--s", "2GiB") == 2147483648ull);
  CHECK(awq_cli::parse_size("--s", "1kib") == 1024);
  CHECK(awq_cli::parse_size("--s", "1TB") == 1000000000000ull);
  auto fails = [](const std::string& v, const std::string& msg) {
    CAPTURE(v);
    CHECK_THROWS_WITH_AS(awq_cli::parse_size("--shard-size", v), doctest::Contains(msg.c_str()), awq::Error);
  };
  fails("abc", "--shard-size: 'abc' is not a size (accepted: a whole number of bytes with an optional unit");
  fails("GB", "'GB' is not a size");
  fails("5 GB", "'5 GB' is not a size");
  fails("-5GB", "'-5GB' is not a size");
  fails("1.5GB", "'1.5GB' is not a size");
  fails("5Gbit", "'5Gbit' is not a size");
  fails("99999999999999999999", "is not a size");
  fails("999", "--shard-size: 999 is out of range (accepted:");
  fails("0", "0 is out of range");
  fails("1TiB", "1TiB is out of range");
  fails("9999999999999TB", "9999999999999TB is out of range");
  const auto a = parse(required({"--export", "out", "--shard-size", "2GB"}));
  CHECK(a.shard_bytes == 2000000000ull);
  CHECK(parse(required({"--export", "out"})).shard_bytes == 0);
  CHECK_THROWS_WITH_AS(parse(required({"--shard-size", "2GB"})), doctest::Contains("--shard-size is given without --export"), awq::Error);
  CHECK(awq_cli::help_text().find("--shard-size SIZE") != std::string::npos);
}

TEST_CASE("--configs items: bits, groups, both spellings, duplicates") {
  const auto c = awq_cli::parse_configs("w4g64,w3-g128,w8g32,w2g256");
  REQUIRE(c.size() == 4);
  CHECK(c[1] == awq::QuantSpec{3, 128, true});
  auto fails = [](const std::string& v, const std::string& msg) {
    CAPTURE(v);
    CHECK_THROWS_WITH_AS(awq_cli::parse_configs(v), doctest::Contains(msg.c_str()), awq::Error);
  };
  fails("w9g64", "9 bits is out of range (accepted: 2 to 8)");
  fails("w1g64", "1 bits is out of range");
  fails("w4g100", "group 100 is not supported (accepted: 32, 64, 128, 256)");
  fails("w4g16", "group 16 is not supported");
  fails("w4g64,w4-g64", "--configs: 'w4-g64' repeats 'w4g64' in 'w4g64,w4-g64'");
  fails("w4g64,", "has an empty item");
  fails("4g64", "cannot parse '4g64'");
  fails("w4g64x", "cannot parse 'w4g64x'");
  fails("w-4g64", "cannot parse");
  fails("w99999999999g64", "cannot parse");
}

TEST_CASE("awq_llama's parser: help, defaults, ranges and messages that name the flag") {
  CHECK(parse({"--help"}).cmd == "help");
  CHECK(parse({"-h"}).cmd == "help");
  CHECK(parse({"help"}).cmd == "help");
  CHECK(parse({"quantize", "--seq-len", "8", "--help"}).cmd == "help");
  CHECK(parse({"inspect", "--help"}).cmd == "help");
  CHECK(parse({"inspect", "f.gguf"}).inspect_file == "f.gguf");

  const auto d = parse(required({}));
  CHECK(d.cmd == "quantize");
  CHECK(d.seq_len == 512);
  CHECK(d.calib_seqs == 64);
  CHECK(!d.search_seqs_given);
  CHECK(d.threads == 0);
  CHECK(d.layers == -1);
  CHECK(!d.gptq_damp);  // by width: SearchMode::default_gptq_damp
  CHECK(parse(required({"--gptq-damp", "0.1"})).gptq_damp == 0.1);
  const auto s = parse(required({"--seq-len=128", "--eval-tokens", "256", "--calib-seqs", "8", "--search-seqs", "0", "--duo",
                                 "--layers", "2", "--threads", "1"}));
  CHECK(s.seq_len == 128);
  CHECK(s.eval_tokens == 256);
  CHECK(s.calib_seqs == 8);
  CHECK(s.search_seqs_given);
  CHECK(s.search_seqs == 0);
  CHECK(s.duo);
  CHECK(s.layers == 2);
  CHECK(s.threads == 1);

  auto fails = [](std::vector<std::string> args, const std::string& msg) {
    CAPTURE(msg);
    CHECK_THROWS_WITH_AS(parse(std::move(args)), doctest::Contains(msg.c_str()), awq::Error);
  };
  fails({"--frobnicate"}, "unknown option --frobnicate (see awq_llama --help)");
  fails({"quantise"}, "unknown command 'quantise'");
  fails({"inspect"}, "inspect: a file is required");
  fails({"inspect", "a", "b"}, "inspect takes one file, got also 'b'");
  fails({"--model", "m", "--calib-text", "c"}, "quantize: --eval-text is required");
  fails(required({"--seq-len"}), "--seq-len needs a value");
  fails(required({"--seq-len", "--duo"}), "--seq-len needs a value, got the option --duo");
  fails(required({"--seq-len", "0"}), "--seq-len: 0 is out of range");
  fails(required({"--seq-len", "1"}), "--seq-len: 1 is out of range");
  fails(required({"--eval-tokens", "abc"}), "--eval-tokens: 'abc' is not a whole number");
  fails(required({"--eval-tokens", "-5"}), "--eval-tokens: -5 is out of range");
  fails(required({"--eval-tokens", "100"}), "--eval-tokens 100 is less than --seq-len 512");
  fails(required({"--calib-seqs", "0"}), "--calib-seqs: 0 is out of range (accepted: an integer >= 1)");
  fails(required({"--search-seqs", "-1"}), "--search-seqs: -1 is out of range");
  fails(required({"--calib-seqs", "4", "--search-seqs", "5"}), "--search-seqs 5 is more than --calib-seqs 4");
  fails(required({"--layers", "0"}), "--layers: 0 is out of range");
  fails(required({"--threads", "-1"}), "--threads: -1 is out of range");
  fails(required({"--gptq-damp", "0"}), "--gptq-damp: 0 is out of range (accepted: a number with 0 < D <= 100)");
  fails(required({"--gptq-damp", "101"}), "--gptq-damp: 101 is out of range");
  fails(required({"--gptq-damp", "nan"}), "--gptq-damp: 'nan' is not a number");
  fails(required({"--threads", "100000"}), "--threads: 100000 is out of range (accepted: 0 (all) or 1 to");
  fails(required({"--backend", "tpu"}), "--backend: 'tpu' is not a backend (accepted: cpu, cuda)");
  fails(required({"--seq-len", "8", "--seq-len", "16"}), "--seq-len is given twice");
  fails(required({"--duo=yes"}), "--duo takes no value");
  fails(required({"--report="}), "--report needs a value, got an empty one");
  fails(required({"stray"}), "unexpected argument 'stray'");
}

TEST_CASE("awq_llama's environment checks: inputs, UTF-8 texts and writable outputs before any work") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("awq_cli_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir / name, std::ios::binary) << bytes;
    return (dir / name).string();
  };
  const std::string model = write("m.gguf", std::string("GGUF\x03\0\0\0", 8)), text = write("t.txt", "hello\n"),
                    latin1 = write("l.txt", "na\xEFve\n"), notgguf = write("n.bin", "PK\x03\x04");
  auto args = [&](std::vector<std::string> extra) {
    std::vector<std::string> a{"--model", model, "--calib-text", text, "--eval-text", text};
    a.insert(a.end(), extra.begin(), extra.end());
    return parse(a);
  };
  auto fails = [](const awq_cli::Args& a, const std::string& msg) {
    CAPTURE(msg);
    CHECK_THROWS_WITH_AS(awq_cli::check_environment(a), doctest::Contains(msg.c_str()), awq::Error);
  };
  awq_cli::check_environment(args({"--report", (dir / "r.json").string(), "--export", (dir / "new" / "deeper").string()}));
  CHECK(!fs::exists(dir / "new"));  // nothing is created by the checks
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}) == 4);  // the probes are gone

  auto a = args({});
  a.model = (dir / "absent.gguf").string();
  fails(a, "--model " + a.model + ": no such file or directory");
  a.model = notgguf;
  fails(a, ": not a GGUF file or a Hugging Face model directory (4 bytes are too few for a GGUF or a safetensors file)");
  a.model = dir.string();
  fails(a, ": not a GGUF file or a Hugging Face model directory (a directory without config.json)");
  a = args({});
  a.eval_text = latin1;
  fails(a, "--eval-text " + latin1 + ": not valid UTF-8 at byte offset 2: lead byte 0xEF followed by 0x76");
  fails(args({"--report", (dir / "no" / "r.json").string()}), "directory '" + (dir / "no").string() + "' does not exist");
  fails(args({"--report", dir.string()}), ": is a directory");
  fails(args({"--export", (fs::path(text) / "sub").string()}), "is not a directory");
  fails(args({"--checkpoint", (fs::path(text) / "sub").string()}), "--checkpoint");
  fs::remove_all(dir);
}

TEST_CASE("describe: one line, no standard-library internals") {
  CHECK(awq_cli::describe(awq::Error("--seq-len: 0 is out of range")) == "--seq-len: 0 is out of range");
  CHECK(awq_cli::describe(std::bad_alloc()).rfind("out of memory", 0) == 0);
  const std::filesystem::filesystem_error fe("cannot create directories", std::filesystem::path("out/x"),
                                             std::make_error_code(std::errc::not_a_directory));
  CHECK(awq_cli::describe(fe) == "out/x: " + std::make_error_code(std::errc::not_a_directory).message());
  CHECK(awq_cli::describe(std::runtime_error("two\nlines")) == "two lines");
}
