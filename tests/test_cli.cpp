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

#include <awq/model/config.hpp>

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

TEST_CASE("parse_real takes finite decimal numbers in range: out of range for what is a number, not a number otherwise") {
  CHECK(awq_cli::parse_real("--t", "0.5", 0, 1, "x") == 0.5);
  CHECK(awq_cli::parse_real("--t", "1e-3", 0, 1, "x") == 1e-3);
  CHECK(awq_cli::parse_real("--t", "-0", 0, 1, "x") == 0);
  auto fails = [](const std::string& v, const std::string& msg) {
    CAPTURE(v);
    CHECK_THROWS_WITH_AS(awq_cli::parse_real("--temperature", v, 0, 100, "0 = greedy, or a number up to 100"), doctest::Contains(msg.c_str()),
                         awq::Error);
  };
  // strtod's ERANGE for a subnormal or an underflow to 0: a number out of range, not "not a number".
  fails("1e-320", "--temperature: 1e-320 is out of range (accepted: 0 = greedy, or a number up to 100; nonzero values from 2.22507e-308)");
  fails("1e-400", "1e-400 is out of range (accepted: 0 = greedy, or a number up to 100; nonzero values from 2.22507e-308)");
  fails("-1e-400", "-1e-400 is out of range");
  fails("1e999", "1e999 is out of range");
  fails("101", "101 is out of range");
  fails("0x1p3", "--temperature: '0x1p3' is not a number");  // hex floats, as the integers' 0x10
  fails("0X10", "'0X10' is not a number");
  fails("inf", "'inf' is not a number");
  fails("nan", "'nan' is not a number");
  fails(" 1", "' 1' is not a number");
  fails("1 ", "'1 ' is not a number");
  fails("1e", "'1e' is not a number");
  fails("", "'' is not a number");
  // Stored as a float: a nonzero value that would become 0 (or a subnormal) is out of range.
  CHECK(awq_cli::parse_float("--top-p", "1e-30", 0, 1, "x") == doctest::Approx(1e-30f));
  CHECK(awq_cli::parse_float("--temperature", "0", 0, 1, "x") == 0);
  CHECK_THROWS_WITH_AS(awq_cli::parse_float("--top-p", "1e-50", 0, 1, "a number with 0 < P <= 1"),
                       "--top-p: 1e-50 is out of range (accepted: a number with 0 < P <= 1; nonzero values from 1.17549e-38)", awq::Error);
  CHECK_THROWS_WITH_AS(awq_cli::parse_float("--temperature", "1e-320", 0, 100, "x"), "--temperature: 1e-320 is out of range (accepted: x; nonzero values from 1.17549e-38)",
                       awq::Error);
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
  fails("99999999999999999999", "--shard-size: 99999999999999999999 is out of range");
  fails("99999999999999GB", "99999999999999GB is out of range (accepted: a whole number of bytes with an optional unit B, KB, MB, GB, TB, KiB");
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
  fails({"--help=1"}, "--help takes no value (got '1')");
  fails(required({"--help="}), "--help takes no value (got '')");
  fails({"inspect", "--help=yes"}, "--help takes no value (got 'yes')");
  fails({"inspect", ""}, "inspect: an empty path (accepted: FILE.gguf|FILE.safetensors|HF_DIR)");
}

TEST_CASE("awq_llama's parser: the other command's options, hex and tiny numbers, the seed's range") {
  auto fails = [](std::vector<std::string> args, const std::string& msg) {
    CAPTURE(msg);
    CHECK_THROWS_WITH_AS(parse(std::move(args)), doctest::Contains(msg.c_str()), awq::Error);
  };
  fails({"--prompt", "Hi", "--model", "m.gguf"}, "unknown option --prompt (an option of the generate command; see awq_llama --help)");
  fails(required({"--seed", "1"}), "unknown option --seed (an option of the generate command");
  fails({"generate", "--model", "m", "--prompt", "p", "--calib-text", "c"}, "unknown option --calib-text of generate (an option of the quantize command");
  fails({"generate", "--model", "m", "--prompt", "p", "--frobnicate"}, "unknown option --frobnicate of generate (see awq_llama --help)");
  const std::vector<std::string> gen{"generate", "--model", "m", "--prompt", "p", "--temperature", "0.7"};
  auto g = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = gen;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  fails(g({"--seed", "9223372036854775808"}), "--seed: 9223372036854775808 is out of range (accepted: an integer from 0 to 9223372036854775807)");
  CHECK(parse(g({"--seed", "9223372036854775807"})).seed == 9223372036854775807ull);
  fails({"generate", "--model", "m", "--prompt", "p", "--temperature", "1e-320"}, "--temperature: 1e-320 is out of range");
  fails({"generate", "--model", "m", "--prompt", "p", "--temperature", "0x1p3"}, "--temperature: '0x1p3' is not a number");
  fails(g({"--top-p", "1e-50"}), "--top-p: 1e-50 is out of range");
  fails(required({"--gptq-damp", "0x1p-4"}), "--gptq-damp: '0x1p-4' is not a number");
}

TEST_CASE("awq_llama's parser: options without effect in the combination are refused, naming both") {
  auto fails = [](std::vector<std::string> args, const std::string& msg) {
    CAPTURE(msg);
    CHECK_THROWS_WITH_AS(parse(std::move(args)), doctest::Contains(msg.c_str()), awq::Error);
  };
  const std::vector<std::string> gen{"generate", "--model", "m", "--prompt", "p"};
  auto g = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = gen;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  fails(g({"--seed", "7"}), "--seed 7 has no effect at --temperature 0 (greedy decoding, the default; --temperature T > 0 samples)");
  fails(g({"--top-p", "0.9"}), "--top-p 0.9 has no effect at --temperature 0");
  fails(g({"--top-p", "0.9", "--temperature", "0"}), "--top-p 0.9 has no effect at --temperature 0");
  const auto s = parse(g({"--seed", "7", "--top-p", "0.9", "--temperature", "0.8"}));
  CHECK(s.seed == 7);
  CHECK(s.top_p == doctest::Approx(0.9f));
  fails(required({"--mode", "reference", "--gptq-damp", "0.5"}), "--gptq-damp 0.5 has no effect with --mode reference, which has no gptq rounding");
  fails(required({"--gptq-damp", "0.5", "--mode", "sequential+refine"}), "--gptq-damp 0.5 has no effect with --mode sequential+refine");
  CHECK(parse(required({"--gptq-damp", "0.5"})).gptq_damp == 0.5);  // improved: gptq-regroup-within
  CHECK(parse(required({"--gptq-damp", "0.5", "--mode", "sequential+gptq"})).gptq_damp == 0.5);
  CHECK(parse(required({"--gptq-damp", "0.5", "--mode", "gptq-regroup"})).gptq_damp == 0.5);
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

TEST_CASE("awq_llama's environment checks: no output over an input, --export and --checkpoint apart") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("awq_cli_apart_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "in");
  fs::create_directories(dir / "hf");
  auto write = [&](const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  };
  const std::string model = write(dir / "m.gguf", std::string("GGUF\x03\0\0\0", 8)), calib = write(dir / "in" / "c.txt", "hello\n"),
                    eval = write(dir / "e.txt", "world\n");
  write(dir / "hf" / "config.json", "{}");
  fs::create_symlink(dir / "m.gguf", dir / "link.gguf");
  fs::create_hard_link(dir / "e.txt", dir / "hard.txt");
  auto args = [&](std::vector<std::string> extra, const std::string& m = "") {
    std::vector<std::string> a{"--model", m.empty() ? model : m, "--calib-text", calib, "--eval-text", eval};
    a.insert(a.end(), extra.begin(), extra.end());
    return parse(a);
  };
  auto fails = [](const awq_cli::Args& a, const std::string& msg) {
    CAPTURE(msg);
    CHECK_THROWS_WITH_AS(awq_cli::check_environment(a), doctest::Contains(msg.c_str()), awq::Error);
  };
  const std::string d = dir.string();
  fails(args({"--report", model}), "--report " + model + " is the same file as --model " + model + " (the report would overwrite it)");
  fails(args({"--report", d + "/link.gguf"}), "--report " + d + "/link.gguf is the same file as --model " + model);
  fails(args({"--report", d + "/hard.txt"}), "--report " + d + "/hard.txt is the same file as --eval-text " + eval);
  fails(args({"--report", d + "/in/../in/c.txt"}), "is the same file as --calib-text " + calib);
  fails(args({"--report", d + "/hf/config.json"}, d + "/hf"), "--report " + d + "/hf/config.json is the same file as " + d +
                                                                 "/hf/config.json of --model " + d + "/hf");
  fails(args({"--export", d}), "--export " + d + " holds --model " + model + " (its directories are replaced or written");
  fails(args({"--export", d + "/in/"}), "--export " + d + "/in/ holds --calib-text " + calib);
  fails(args({"--checkpoint", d + "/hf"}, d + "/hf"), "--checkpoint " + d + "/hf holds --model " + d + "/hf");
  fails(args({"--checkpoint", d + "/./in"}), "--checkpoint " + d + "/./in holds --calib-text");
  fails(args({"--export", d + "/out", "--checkpoint", d + "/out/"}), "--export " + d + "/out and --checkpoint " + d +
                                                                        "/out/ are the same directory");
  fails(args({"--export", d + "/out", "--checkpoint", d + "/out/ck"}), "--checkpoint " + d + "/out/ck is inside --export " + d + "/out");
  fails(args({"--export", d + "/ck/x/y", "--checkpoint", d + "/ck"}), "--export " + d + "/ck/x/y is inside --checkpoint " + d + "/ck");
  // Apart: accepted, including a report or directory next to the inputs or inside a model directory.
  awq_cli::check_environment(args({"--report", d + "/r.json", "--export", d + "/out", "--checkpoint", d + "/outck"}));
  awq_cli::check_environment(args({"--report", d + "/hf/r.json", "--export", d + "/hf/out"}, d + "/hf"));
  awq_cli::check_environment(args({"--export", d + "/in2"}));  // a sibling whose name starts like an input's directory
  // --eval-text the same file as --calib-text: a warning, not an error.
  CHECK(awq_cli::warnings(args({})).empty());
  auto same = args({});
  same.eval_text = d + "/in/../in/c.txt";
  const auto w = awq_cli::warnings(same);
  REQUIRE(w.size() == 1);
  CHECK(w[0] == "warning: --eval-text " + same.eval_text + " is the same file as --calib-text " + calib +
                    ": the perplexity is measured on the calibration text, which flatters the quantized models");
  fs::remove_all(dir);
}

TEST_CASE("check_groups: each --configs group divides every input width of the model's linears") {
  awq::model::ModelConfig c;  // SmolLM2-135M: hidden 576, MLP 1536, 9 heads of 64
  c.hidden = 576;
  c.intermediate = 1536;
  c.n_heads = 9;
  c.head_dim = 64;
  awq_cli::check_groups(awq_cli::parse_configs("w4g64,w3g32"), c);
  CHECK_THROWS_WITH_AS(awq_cli::check_groups(awq_cli::parse_configs("w4g64,w4g128"), c),
                       "--configs w4g128: group 128 does not divide the model's input width 576 (accepted here: 32, 64)", awq::Error);
  c.intermediate = 96;  // the tiny OPT's
  CHECK_THROWS_WITH_AS(awq_cli::check_groups(awq_cli::parse_configs("w4g64"), c),
                       "--configs w4g64: group 64 does not divide the model's input width 96 (accepted here: 32)", awq::Error);
  c.intermediate = 100;
  CHECK_THROWS_WITH_AS(awq_cli::check_groups(awq_cli::parse_configs("w4g32"), c),
                       "--configs w4g32: group 32 does not divide the model's input width 100 (no group of 32, 64, 128, 256 divides all of its widths)",
                       awq::Error);
}

TEST_CASE("describe: one line, no standard-library internals") {
  CHECK(awq_cli::describe(awq::Error("--seq-len: 0 is out of range")) == "--seq-len: 0 is out of range");
  CHECK(awq_cli::describe(std::bad_alloc()).rfind("out of memory", 0) == 0);
  const std::filesystem::filesystem_error fe("cannot create directories", std::filesystem::path("out/x"),
                                             std::make_error_code(std::errc::not_a_directory));
  CHECK(awq_cli::describe(fe) == "out/x: " + std::make_error_code(std::errc::not_a_directory).message());
  CHECK(awq_cli::describe(std::runtime_error("two\nlines")) == "two lines");
}

TEST_CASE("describe: no C++ names of the library, no nlohmann exception ids, the rest intact") {
  const auto d = [](const std::string& m) { return awq_cli::describe(awq::Error(m)); };
  CHECK(d("awq::io::GgufFile: t.gguf: metadata 'x' array length 48900 cannot fit in the 39805 bytes left (limit 16777216)") ==
        "t.gguf: metadata 'x' array length 48900 cannot fit in the 39805 bytes left (limit 16777216)");
  CHECK(d("awq::io::detect_format: cannot read /tmp/u.gguf") == "cannot read /tmp/u.gguf");
  CHECK(d("awq::model::HfSource: d: tensor 'model.layers.0.self_attn.q_proj.weight' is missing") ==
        "d: tensor 'model.layers.0.self_attn.q_proj.weight' is missing");
  CHECK(d("awq::GptqFactor: H + lambda I (lambda = 2.1e-07) is not positive definite") == "H + lambda I (lambda = 2.1e-07) is not positive definite");
  CHECK(d("awq::io::write_atomically: cannot create r.json.tmp: Is a directory") == "cannot create r.json.tmp: Is a directory");
  CHECK(d("awq::io::HfCheckpoint::load_f32: d/model.safetensors: dtype 'I8'") == "d/model.safetensors: dtype 'I8'");
  CHECK(d("awq: group_size 128 does not divide in_features 576") == "group_size 128 does not divide in_features 576");
  CHECK(d("BpeTokenizer: tokenizer.ggml.model is 'llama', only gpt2 (byte-level BPE) is supported") ==
        "tokenizer.ggml.model is 'llama', only gpt2 (byte-level BPE) is supported");
  // After the tool's "--option VALUE: ", nested, inside parentheses.
  CHECK(d("--model m.gguf: awq::io::GgufFile: m.gguf: bad version 9") == "--model m.gguf: m.gguf: bad version 9");
  CHECK(d("awq::io::GgufFile: SmolLM: bad version 9") == "SmolLM: bad version 9");  // a path after the name stays
  CHECK(d("awq::model::HfSource: awq::io::HfCheckpoint: d/config.json: not an object") == "d/config.json: not an object");
  CHECK(d("--gptq-damp 1e-9: block 0 (awq::GptqFactor: not positive definite)") == "--gptq-damp 1e-9: block 0 (not positive definite)");
  // nlohmann's ids, wherever they are.
  CHECK(d("awq::io::HfCheckpoint: d/config.json is not valid JSON: [json.exception.parse_error.101] parse error at line 2, column 1: "
          "syntax error") == "d/config.json is not valid JSON: parse error at line 2, column 1: syntax error");
  CHECK(d("inspect: d/config.json is not valid JSON ([json.exception.parse_error.101] parse error at line 2)") ==
        "inspect: d/config.json is not valid JSON (parse error at line 2)");
  CHECK(d("x: [json.exception.type_error.302] type must be string, but is number") == "x: type must be string, but is number");
  // Left alone: the tool's own words, paths and names that only look alike.
  for (const std::string m : {"--seq-len: 0 is out of range (accepted: 2 to 100)", "inspect: absent.gguf: no such file or directory",
                              "--model SmolLM2: not a GGUF file", "SmolLM2.gguf: GGUF metadata key 'llama.block_count' is missing",
                              "GGUF: bad magic", "generate: --prompt is required (see awq_llama --help)",
                              "--mode: 'fast' is not a search mode", "d: the awq: prefix inside a sentence stays"})
    CHECK(d(m) == m);
}
