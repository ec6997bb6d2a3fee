// The awq_llama command line: its options with their defaults (one table drives both the parser
// and --help), strict number parsing, and every check that can be made before the model is loaded:
// ranges, input files, and that each output location can be written (so a long run is never lost
// at its end to a typo in --report).
#pragma once

#include <awq/backend/cpu.hpp>
#include <awq/config.hpp>
#include <awq/error.hpp>
#include <awq/io/atomic_file.hpp>
#include <awq/io/gguf.hpp>
#include <awq/model/config.hpp>
#include <awq/model/search_mode.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <exception>
#include <fstream>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "cli/format.hpp"
#include "cli/text.hpp"

namespace awq_cli {

/// What the command line asks for. Field names are used by awq_llama's main; add at the end.
struct Args {
  std::string cmd = "quantize", backend = "cpu", checkpoint_dir, model, calib_text, eval_text, report, inspect_file, export_dir;
  std::vector<awq::QuantSpec> configs{{4, 64, true}, {3, 64, true}};
  bool duo = false;
  bool tf32 = false;          ///< --tf32: --math tf32
  std::string math;           ///< --math: how the GPU's fp32 products run (awq::backend::cuda::Math); default by backend
  bool eval_dequantized = false;  ///< --eval-dequantized: no W4A16 kernels in the GPU evaluation
  int calib_seqs = 64, search_seqs = 8, seq_len = 512, eval_tokens = 32768, layers = -1;
  int threads = 0;                 ///< 0: every hardware thread
  bool search_seqs_given = false;  ///< --search-seqs on the command line (else it is clamped to the calibration sequences)
  std::string prompt;              ///< generate: the prompt, UTF-8
  int max_new_tokens = 64;         ///< generate: new tokens at most
  float temperature = 0.0f;        ///< generate: 0 = greedy
  float top_p = 1.0f;              ///< generate: nucleus
  std::uint64_t seed = 0;          ///< generate: sampling seed
  bool dequantize = false;         ///< generate: run an AWQ checkpoint's linears dequantized in fp32
  std::uint64_t shard_bytes = 0;   ///< --shard-size in bytes; 0: not given (the exporter's default, 5 GB)
  std::string mode = "improved";  ///< --mode: an awq::model::SearchMode preset
  std::optional<double> gptq_damp;  ///< --gptq-damp: SearchMode::gptq_damp (unset: by width)
};

/// \brief Parses s as a decimal integer in [lo, hi], all of it (no sign other than a leading '-',
///        no spaces, no trailing characters).
/// \throws awq::Error "FLAG: 'S' is not a whole number (accepted: WHAT)" or "FLAG: S is out of
///         range (accepted: WHAT)"; `what` describes the accepted values.
inline long long parse_int(const std::string& flag, const std::string& s, long long lo, long long hi, const std::string& what) {
  long long v = 0;
  const char* end = s.data() + s.size();
  const auto r = std::from_chars(s.data(), end, v);
  const bool digits = !s.empty() && s.find_first_not_of("-0123456789") == std::string::npos;
  if (r.ec == std::errc::result_out_of_range && digits && r.ptr == end)
    throw awq::Error(flag + ": " + s + " is out of range (accepted: " + what + ")");
  if (r.ec != std::errc() || r.ptr != end || !digits) throw awq::Error(flag + ": '" + s + "' is not a whole number (accepted: " + what + ")");
  if (v < lo || v > hi) throw awq::Error(flag + ": " + s + " is out of range (accepted: " + what + ")");
  return v;
}

/// \brief Parses s as a finite decimal number in [lo, hi], all of it (digits, '.', an exponent:
///        no hex floats, inf or nan, as the integers take no 0x10). A nonzero value below `tiny`
///        (the smallest normal number of the type that stores it) is out of range too.
/// \throws awq::Error "FLAG: 'S' is not a number (accepted: WHAT)" or "FLAG: S is out of range
///         (accepted: WHAT)", also for a number too large or too small for a double (1e999, 1e-320).
inline double parse_real(const std::string& flag, const std::string& s, double lo, double hi, const std::string& what,
                         double tiny = DBL_MIN) {
  errno = 0;
  char* end = nullptr;
  const bool decimal = !s.empty() && s.find_first_not_of("0123456789.eE+-") == std::string::npos;
  const double v = decimal ? std::strtod(s.c_str(), &end) : 0.0;
  if (!decimal || end != s.c_str() + s.size()) throw awq::Error(flag + ": '" + s + "' is not a number (accepted: " + what + ")");
  // strtod's ERANGE: an overflow (HUGE_VAL) or an underflow (a subnormal, or 0): a number all the same
  if ((errno == ERANGE && std::fabs(v) < 1) || (v != 0 && std::fabs(v) < tiny)) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", tiny);
    throw awq::Error(flag + ": " + s + " is out of range (accepted: " + what + "; nonzero values from " + b + ")");
  }
  if (errno == ERANGE || !std::isfinite(v) || v < lo || v > hi)
    throw awq::Error(flag + ": " + s + " is out of range (accepted: " + what + ")");
  return v;
}

/// parse_real for an option stored as a float: 1e-50 would become 0, a value such an option
/// refuses (--top-p) or means otherwise (--temperature).
inline float parse_float(const std::string& flag, const std::string& s, double lo, double hi, const std::string& what) {
  return static_cast<float>(parse_real(flag, s, lo, hi, what, FLT_MIN));
}

/// \brief Parses s as a size in bytes: a whole number and an optional unit, B, KB, MB, GB, TB
///        (powers of 1000, as transformers' max_shard_size) or KiB, MiB, GiB, TiB (powers of
///        1024), in any case, from 1 KB to 1 TB.
/// \throws awq::Error "FLAG: 'S' is not a size (accepted: ...)" or "FLAG: S is out of range (accepted: ...)".
inline std::uint64_t parse_size(const std::string& flag, const std::string& s) {
  const std::string what = "a whole number of bytes with an optional unit B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, from 1KB to 1TB, e.g. 2GB";
  static const std::pair<const char*, std::uint64_t> units[] = {
      {"", 1},          {"b", 1},           {"kb", 1000},       {"mb", 1000'000},  {"gb", 1000'000'000}, {"tb", 1000'000'000'000},
      {"kib", 1 << 10}, {"mib", 1ull << 20}, {"gib", 1ull << 30}, {"tib", 1ull << 40}};
  const std::size_t k = std::min(s.size(), s.find_first_not_of("0123456789"));
  std::string unit = s.substr(k);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::uint64_t mult = 0;
  for (const auto& [name, m] : units)
    if (unit == name) mult = m;
  if (k == 0 || mult == 0) throw awq::Error(flag + ": '" + s + "' is not a size (accepted: " + what + ")");
  constexpr std::uint64_t lo = 1000, hi = 1000'000'000'000;
  const std::size_t zeros = std::min(k - 1, s.find_first_not_of('0'));  // leading zeros do not make a number large
  const bool huge = k - zeros > 13;  // above 1TB in bytes, in any unit: stoull may not take it
  const std::uint64_t n = huge ? 0 : std::stoull(s.substr(zeros, k - zeros));  // at most 13 digits: cannot throw
  if (huge || n > hi / mult || n * mult < lo || n * mult > hi) throw awq::Error(flag + ": " + s + " is out of range (accepted: " + what + ")");
  return n * mult;
}

/// Hardware threads the library can use (at least 1).
inline int hardware_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

/// \brief One `--configs` item: `w<bits>g<group>` or `w<bits>-g<group>` (the name reports use),
///        bits 2..8, group 32, 64, 128 or 256; zero point on.
inline awq::QuantSpec parse_config(const std::string& item) {
  const std::string what = "w<bits>g<group> with bits 2..8 and group 32, 64, 128 or 256, e.g. w4g64";
  const auto g = item.find('g');
  if (item.size() < 4 || item[0] != 'w' || g == std::string::npos || g < 2)
    throw awq::Error("--configs: cannot parse '" + item + "' (accepted: " + what + ")");
  std::string bits = item.substr(1, g - 1);
  if (!bits.empty() && bits.back() == '-') bits.pop_back();
  const std::string group = item.substr(g + 1);
  auto number = [&](const std::string& s) {
    if (s.empty() || s.size() > 4 || s.find_first_not_of("0123456789") != std::string::npos)
      throw awq::Error("--configs: cannot parse '" + item + "' (accepted: " + what + ")");
    return std::stoi(s);  // at most four digits: cannot throw
  };
  const int b = number(bits), gs = number(group);
  if (b < 2 || b > 8) throw awq::Error("--configs " + item + ": " + std::to_string(b) + " bits is out of range (accepted: 2 to 8)");
  if (gs != 32 && gs != 64 && gs != 128 && gs != 256)
    throw awq::Error("--configs " + item + ": group " + std::to_string(gs) + " is not supported (accepted: 32, 64, 128, 256)");
  return awq::QuantSpec{b, gs, true};
}

/// A comma-separated `--configs` list: at least one item, no duplicates.
inline std::vector<awq::QuantSpec> parse_configs(const std::string& s) {
  std::vector<awq::QuantSpec> out;
  std::vector<std::string> items;
  std::size_t begin = 0;
  for (;;) {
    const std::size_t comma = s.find(',', begin);
    const std::string item = s.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    if (item.empty()) throw awq::Error("--configs: '" + s + "' has an empty item (accepted: a comma-separated list such as w4g64,w3g64)");
    const awq::QuantSpec q = parse_config(item);
    for (std::size_t i = 0; i < out.size(); ++i)
      if (out[i] == q) throw awq::Error("--configs: '" + item + "' repeats '" + items[i] + "' in '" + s + "'");
    out.push_back(q);
    items.push_back(item);
    if (comma == std::string::npos) return out;
    begin = comma + 1;
  }
}

/// One option of the quantize command, for the parser and for --help.
struct OptionDoc {
  const char* name;
  const char* value;  ///< metavariable; nullptr for a flag without a value
  const char* help;   ///< what it does, its accepted values and its default
};

inline const std::vector<OptionDoc>& option_docs() {
  static const std::vector<OptionDoc> docs = {
      {"--model", "PATH", "a llama-architecture GGUF file, or a Hugging Face directory of model_type llama, mistral, qwen2 or opt "
                          "(tokenizer.json, or GPT-2's vocab.json + merges.txt) (required)"},
      {"--calib-text", "FILE", "UTF-8 calibration text (required)"},
      {"--eval-text", "FILE", "UTF-8 evaluation text for perplexity (required unless --eval-tokens 0)"},
      {"--configs", "LIST", "comma-separated w<bits>g<group>, bits 2..8, group 32/64/128/256, zero point on (default w4g64,w3g64)"},
      {"--duo", nullptr, "AutoAWQ duo scaling: scales from activations and weights (default off)"},
      {"--eval-dequantized", nullptr, "with --backend cuda: evaluate the quantized models on their dequantized fp32 weights instead "
                                      "of the W4A16 kernels (fp16 activations) that serve 4-bit configs by default"},
      {"--math", "NAME", "with --backend cuda, how products run: fp32, tf32 (TF32 tensor cores, inputs rounded to 10 mantissa "
                         "bits by cuBLAS), fp16 or bf16 (operands rounded to 16 bits, twice the TF32 rate, and a Llama "
                         "block's activations between the products stored in 16 bits: fp16 is what the reference's fp16 "
                         "model computes); fp32 accumulation in all, the searches compare losses at that "
                         "precision (default fp16)"},
      {"--tf32", nullptr, "--math tf32"},
      {"--calib-seqs", "N", "calibration sequences for mean|x| and the clip search, N >= 1, that --calib-text must hold (default 64)"},
      {"--search-seqs", "N", "of those, sequences the scale search's loss uses, N >= 0, 0 = all (default 8 on cpu, all on cuda)"},
      {"--mode", "NAME", "search: improved (sequential+gptq-regroup-within+fp-target: more of RTN's gap recovered than the reference on "
                         "the handbook's eval split), reference (llm-awq's, bit for bit), or one variant: sequential (each block calibrated on the "
                         "quantized blocks' outputs), refine (local alpha refinement after the grid), gptq (GPTQ's error feedback in "
                         "the final rounding, scales and zeros kept), gptq-regroup (the same, group scales recomputed as it goes), "
                         "gptq-regroup-within (recomputed within the range of the weights before the feedback), "
                         "fp-target (with sequential and a gptq rounding: GPTQ's target a quarter of the way to the full-precision "
                         "model's output); "
                         "variants join with '+', e.g. sequential+refine (default improved)"},
      {"--gptq-damp", "D", "the gptq roundings' damping (a --mode with one), lambda = D * mean(diag H), 0 < D <= 100; larger values fit the calibration text less closely (default 0.05 at 4 bits and up, 0.5 below)"},
      {"--seq-len", "N", "tokens per sequence, 2 <= N <= the model's context length (default 512)"},
      {"--eval-tokens", "N", "evaluation tokens at most, N >= --seq-len, or 0: no evaluation (default 32768)"},
      {"--layers", "N", "keep only the first N blocks, 1 <= N <= the model's blocks: a smoke test of the run; the perplexities of a "
                        "truncated model mean nothing (default all)"},
      {"--threads", "N", "CPU threads, 0 = all hardware threads (default 0)"},
      {"--backend", "NAME", "where the search runs: cpu or cuda (cuda needs the awq_llama_cuda build; default cpu)"},
      {"--report", "FILE", "also write the results as JSON to FILE (its directory must exist; not an input file)"},
      {"--export", "DIR", "write a Hugging Face AWQ checkpoint per config under DIR/<config>, block by block as they finish; "
                          "DIR/<config> appears (or is replaced) only once complete; DIR holds no input"},
      {"--shard-size", "SIZE", "with --export: safetensors shards of at most SIZE, e.g. 500MB or 2GiB, 1KB to 1TB; more than one "
                               "shard adds model.safetensors.index.json (default 5GB, as transformers)"},
      {"--checkpoint", "DIR", "save per-block results under DIR as they finish; a rerun resumes from them (DIR holds no input, "
                              "and is apart from --export's)"},
  };
  return docs;
}

/// The options of the generate command.
inline const std::vector<OptionDoc>& generate_option_docs() {
  static const std::vector<OptionDoc> docs = {
      {"--model", "PATH", "a llama-architecture GGUF file, Hugging Face directory, or AWQ checkpoint directory (--export's; AutoAWQ "
                          "GEMM, 4-bit, zero point, group 32/64/128/256) (required)"},
      {"--prompt", "TEXT", "the prompt, non-empty UTF-8 that fits the model's context with the new tokens (required)"},
      {"--max-new-tokens", "N", "new tokens at most, 1 <= N; generation also stops at the model's EOS token (default 64)"},
      {"--temperature", "T", "0 = greedy, else sample from softmax(logits / T), 0 <= T <= 100 (default 0)"},
      {"--top-p", "P", "with --temperature > 0: sample only from the most likely tokens whose probability reaches P, 0 < P <= 1 (default 1)"},
      {"--seed", "S", "with --temperature > 0: the sampling seed, 0 <= S < 2^63; a seed gives the same text every run (default 0)"},
      {"--dequantize", nullptr, "run an AWQ checkpoint's 4-bit linears as dequantized weights, fp32 on the CPU, fp16 cuBLAS on "
                                "the GPU: the baseline (default off)"},
      {"--backend", "NAME", "cpu or cuda: the GPU engine, fp16 activations, KV cache on the device, decode step in a CUDA graph "
                            "(needs the awq_llama_cuda build; default cpu)"},
      {"--threads", "N", "CPU threads, 0 = all hardware threads (default 0)"},
  };
  return docs;
}

namespace detail {
inline void append_options(std::string& s, const std::vector<OptionDoc>& docs) {
  for (const auto& o : docs) {
    std::string head = std::string("  ") + o.name + (o.value ? std::string(" ") + o.value : std::string());
    if (head.size() < 22) head.resize(22, ' ');
    else head += "\n" + std::string(22, ' ');
    s += head + o.help + "\n";
  }
}
}  // namespace detail

/// The full --help text.
inline std::string help_text() {
  std::string s =
      "awq_llama: quantize a Llama-family or OPT model with RTN and AWQ and report perplexity; generate text (Llama family)\n"
      "\n"
      "usage:\n"
      "  awq_llama [quantize] --model FILE.gguf|HF_DIR --calib-text FILE --eval-text FILE [options]\n"
      "  awq_llama generate --model FILE.gguf|HF_DIR|AWQ_DIR --prompt TEXT [options]\n"
      "  awq_llama inspect FILE.gguf | FILE.safetensors | HF_DIR\n"
      "  awq_llama --help\n"
      "\n"
      "options of quantize (also --name=value):\n";
  detail::append_options(s, option_docs());
  s += "\noptions of generate (text on stdout; load, prefill and decode tokens/s on stderr):\n";
  detail::append_options(s, generate_option_docs());
  s +=
      "  -h, --help          this text\n"
      "\n"
      "Every option is checked before the model is loaded; errors exit with code 2.\n"
      "Final weights use fp16 scales, exactly as exported: the perplexities are those of the checkpoints.\n"
      "\n"
      "example:\n"
      "  awq_llama --model data/SmolLM2-135M-Instruct.Q4_1.gguf --calib-text data/handbook-calib.txt \\\n"
      "            --eval-text data/handbook-eval.txt --configs w4g64 --threads 4 --report out/w4.json\n"
      "  awq_llama generate --model out/export/w4-g64-asym --prompt 'The capital of France is' --max-new-tokens 32\n";
  return s;
}

namespace detail {
inline bool is_help(const std::string& s) { return s == "--help" || s == "-h" || s == "help"; }
inline const char* see_help() { return " (see awq_llama --help)"; }
// --help=VALUE: help takes none (else it reads as an unknown option --help).
inline void refuse_help_value(const std::string& s) {
  if (s.rfind("--help=", 0) == 0) throw awq::Error("--help takes no value (got '" + s.substr(7) + "')");
}
inline bool has_option(const std::vector<OptionDoc>& docs, const std::string& k) {
  return std::any_of(docs.begin(), docs.end(), [&](const OptionDoc& o) { return k == o.name; });
}
}  // namespace detail

/// \brief Parses the command line. Checks syntax and ranges only (no file is touched: see
///        check_environment). `cmd` is "help" when help was asked for.
inline Args parse(int argc, const char* const* argv) {
  Args a;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && detail::is_help(args[0])) {
    a.cmd = "help";
    return a;
  }
  if (!args.empty() && args[0] == "inspect") {
    a.cmd = "inspect";
    if (args.size() >= 2 && detail::is_help(args[1])) {
      a.cmd = "help";
      return a;
    }
    awq::detail::require(args.size() >= 2, "inspect: a file is required: awq_llama inspect FILE.gguf|FILE.safetensors|HF_DIR");
    detail::refuse_help_value(args[1]);
    awq::detail::require(!args[1].empty(), "inspect: an empty path (accepted: FILE.gguf|FILE.safetensors|HF_DIR)");
    awq::detail::require(args.size() == 2, "inspect takes one file, got also '", args[2], "'", detail::see_help());
    a.inspect_file = args[1];
    return a;
  }
  std::size_t i = 0;
  if (!args.empty() && args[0] == "quantize") ++i;
  else if (!args.empty() && args[0] == "generate") ++i, a.cmd = "generate";
  else if (!args.empty() && !args[0].empty() && args[0][0] != '-')
    throw awq::Error("unknown command '" + args[0] + "' (commands: quantize, generate, inspect, help)" + detail::see_help());
  const bool gen = a.cmd == "generate";
  const std::vector<OptionDoc>& docs = gen ? generate_option_docs() : option_docs();
  std::vector<std::string> seen;
  std::string top_p_text, seed_text, damp_text;  // as given, for the conflict messages
  for (; i < args.size(); ++i) {
    std::string k = args[i], inline_value;
    bool has_inline = false;
    if (detail::is_help(k)) {
      a.cmd = "help";
      return a;
    }
    detail::refuse_help_value(k);
    if (k.rfind("--", 0) == 0 && k.find('=') != std::string::npos) {
      inline_value = k.substr(k.find('=') + 1);
      k = k.substr(0, k.find('='));
      has_inline = true;
    }
    const OptionDoc* doc = nullptr;
    for (const auto& o : docs)
      if (k == o.name) doc = &o;
    if (!doc && detail::has_option(gen ? option_docs() : generate_option_docs(), k))  // the other command's option
      throw awq::Error("unknown option " + k + (gen ? " of generate (an option of the quantize command;" : " (an option of the generate command;") +
                       " see awq_llama --help)");
    if (!doc)
      throw awq::Error((k.empty() || k[0] != '-' ? "unexpected argument '" + k + "'" : "unknown option " + k + (gen ? " of generate" : "")) +
                       detail::see_help());
    for (const auto& s : seen) awq::detail::require(s != k, k, " is given twice");
    seen.push_back(k);
    if (!doc->value) {
      awq::detail::require(!has_inline, k, " takes no value (got '", inline_value, "')");
      bool& flag = k == "--duo" ? a.duo : k == "--tf32" ? a.tf32 : k == "--eval-dequantized" ? a.eval_dequantized : a.dequantize;
      flag = true;
      continue;
    }
    std::string v;
    if (has_inline) v = inline_value;
    else {
      awq::detail::require(i + 1 < args.size(), k, " needs a value: ", k, " ", doc->value);
      v = args[++i];
      awq::detail::require(v.rfind("--", 0) != 0, k, " needs a value, got the option ", v, " (write ", k, "=", v, " if that is the value)");
    }
    awq::detail::require(!v.empty() || k != "--prompt", "--prompt: the prompt is empty (generation needs at least one token)");
    awq::detail::require(!v.empty(), k, " needs a value, got an empty one");
    constexpr long long kMax = INT_MAX;
    auto num = [&](long long lo, long long hi, const std::string& what) { return static_cast<int>(parse_int(k, v, lo, hi, what)); };
    if (k == "--model") a.model = v;
    else if (k == "--calib-text") a.calib_text = v;
    else if (k == "--eval-text") a.eval_text = v;
    else if (k == "--report") a.report = v;
    else if (k == "--export") a.export_dir = v;
    else if (k == "--checkpoint") a.checkpoint_dir = v;
    else if (k == "--shard-size") a.shard_bytes = parse_size(k, v);
    else if (k == "--configs") a.configs = parse_configs(v);
    else if (k == "--calib-seqs") a.calib_seqs = num(1, kMax, "an integer >= 1");
    else if (k == "--search-seqs") a.search_seqs = num(0, kMax, "an integer >= 0, 0 = all calibration sequences"), a.search_seqs_given = true;
    else if (k == "--seq-len") a.seq_len = num(2, 1 << 20, "an integer from 2 to 1048576 and at most the model's context length");
    else if (k == "--eval-tokens") a.eval_tokens = num(0, kMax, "0 (no evaluation), or an integer >= 2 and >= --seq-len");
    else if (k == "--layers") a.layers = num(1, kMax, "an integer from 1 to the model's number of blocks");
    else if (k == "--prompt") {
      const Utf8Error e = check_utf8(v);
      awq::detail::require(!e, "--prompt: not valid UTF-8 at byte offset ", e.offset, ": ", e.reason);
      a.prompt = v;
    } else if (k == "--max-new-tokens") a.max_new_tokens = num(1, 1 << 20, "an integer from 1 to 1048576 that fits the context with the prompt");
    else if (k == "--temperature") a.temperature = parse_float(k, v, 0, 100, "0 = greedy, or a number up to 100");
    else if (k == "--top-p") {
      a.top_p = parse_float(k, v, 0, 1, "a number with 0 < P <= 1");
      awq::detail::require(a.top_p > 0, "--top-p: ", v, " is out of range (accepted: a number with 0 < P <= 1)");
      top_p_text = v;
    } else if (k == "--seed") {
      a.seed = static_cast<std::uint64_t>(parse_int(k, v, 0, LLONG_MAX, "an integer from 0 to " + std::to_string(LLONG_MAX)));
      seed_text = v;
    }
    else if (k == "--threads") {
      const int hw = hardware_threads();
      a.threads = num(0, hw, "0 (all) or 1 to " + std::to_string(hw) + ", the hardware threads of this machine");
    } else if (k == "--mode") {
      try {
        (void)awq::model::SearchMode::parse(v);
      } catch (const awq::Error& e) {  // the library's reason, without its C++ name
        const std::string m = e.what(), lib = "awq::model::SearchMode: ";
        throw awq::Error("--mode: " + (m.rfind(lib, 0) == 0 ? m.substr(lib.size()) : m));
      }
      a.mode = v;
    } else if (k == "--gptq-damp") {
      a.gptq_damp = parse_real(k, v, 0, 100, "a number with 0 < D <= 100");
      awq::detail::require(*a.gptq_damp > 0, "--gptq-damp: ", v, " is out of range (accepted: a number with 0 < D <= 100)");
      damp_text = v;
    } else if (k == "--math") {
      awq::detail::require(v == "fp32" || v == "tf32" || v == "fp16" || v == "bf16", "--math: '", v,
                           "' is not a math mode (accepted: fp32, tf32, fp16, bf16)");
      a.math = v;
    } else if (k == "--backend") {
      awq::detail::require(v == "cpu" || v == "cuda", "--backend: '", v, "' is not a backend (accepted: cpu, cuda)");
      a.backend = v;
    }
  }
  for (const char* req : gen ? std::vector<const char*>{"--model", "--prompt"} : std::vector<const char*>{"--model", "--calib-text", "--eval-text"}) {
    if (a.eval_tokens == 0 && std::string(req) == "--eval-text") continue;
    bool given = false;
    for (const auto& s : seen) given = given || s == req;
    awq::detail::require(given, a.cmd, ": ", req, " is required", detail::see_help());
  }
  awq::detail::require(a.shard_bytes == 0 || !a.export_dir.empty(), "--shard-size is given without --export (it sizes the export's shards)");
  awq::detail::require(a.eval_tokens == 0 || a.eval_tokens >= a.seq_len, "--eval-tokens ", a.eval_tokens, " is less than --seq-len ",
                       a.seq_len, ": the evaluation needs at least one whole sequence (or 0: none)");
  awq::detail::require(a.eval_tokens > 0 || a.eval_text.empty(), "--eval-text ", a.eval_text, " is given with --eval-tokens 0 (no evaluation)");
  // The GPU searches on every calibration sequence by default: the reference's loss, at no cost worth saving.
  if (!a.search_seqs_given && a.backend == "cuda") a.search_seqs = 0;
  awq::detail::require(!a.search_seqs_given || a.search_seqs <= a.calib_seqs, "--search-seqs ",
                       a.search_seqs, " is more than --calib-seqs ", a.calib_seqs, " (accepted: 0 = all, or 1 to ", a.calib_seqs, ")");
  awq::detail::require(!a.tf32 || a.backend == "cuda", "--tf32 applies to --backend cuda only (the backend is ", a.backend, ")");
  awq::detail::require(!a.tf32 || a.math.empty() || a.math == "tf32", "--tf32 contradicts --math ", a.math);
  if (a.tf32) a.math = "tf32";
  awq::detail::require(a.math.empty() || a.backend == "cuda", "--math ", a.math, " applies to --backend cuda only (the backend is ",
                       a.backend, ")");
  // The GPU multiplies fp16 operands by default: the reference's own precision, at twice TF32's rate.
  if (a.math.empty()) a.math = a.backend == "cuda" ? "fp16" : "fp32";
  awq::detail::require(!a.eval_dequantized || a.backend == "cuda", "--eval-dequantized applies to --backend cuda only (the backend is ",
                       a.backend, ")");
  // Options that would be silently ignored: refused, as --shard-size without --export is.
  for (const auto& [name, value] : {std::pair{"--seed", seed_text}, std::pair{"--top-p", top_p_text}})
    awq::detail::require(value.empty() || a.temperature > 0, name, " ", value, " has no effect at --temperature 0 (greedy decoding, the ",
                         "default; --temperature T > 0 samples)");
  awq::detail::require(damp_text.empty() || awq::model::SearchMode::parse(a.mode).rounding != awq::model::SearchMode::Rounding::nearest,
                       "--gptq-damp ", damp_text, " has no effect with --mode ", a.mode, ", which has no gptq rounding (accepted with a mode ",
                       "that has one: improved, gptq, gptq-regroup or gptq-regroup-within, alone or joined)");
  return a;
}

/// \brief Checks that each `--configs` group divides every input width of the model's linears
///        (hidden size, MLP inner size, attention heads x head_dim), once the model's header is read.
/// \throws awq::Error "--configs w4g128: group 128 does not divide the model's input width 576
///         (accepted here: 32, 64)".
inline void check_groups(const std::vector<awq::QuantSpec>& configs, const awq::model::ModelConfig& c) {
  const long long widths[] = {c.hidden, c.intermediate, static_cast<long long>(c.n_heads) * c.head_dim};
  std::string fit;  // the groups of parse_config that divide them all
  for (int g : {32, 64, 128, 256})
    if (std::all_of(std::begin(widths), std::end(widths), [g](long long w) { return w > 0 && w % g == 0; }))
      fit += (fit.empty() ? "" : ", ") + std::to_string(g);
  for (const auto& q : configs)
    for (long long w : widths)
      awq::detail::require(q.group_size <= 0 || (w > 0 && w % q.group_size == 0), "--configs w", q.bits, "g", q.group_size, ": group ",
                           q.group_size, " does not divide the model's input width ", w,
                           fit.empty() ? std::string(" (no group of 32, 64, 128, 256 divides all of its widths)") : " (accepted here: " + fit + ")");
}

namespace detail {

// A Hugging Face directory's groups checked from config.json before the model is opened; a
// config.json that cannot be read is left to the job, whose reader says what is wrong with it.
inline void check_hf_groups(const Args& a) {
  std::ifstream in(std::filesystem::path(a.model) / "config.json");
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object()) return;
  std::optional<awq::model::ModelConfig> c;
  try {
    c = awq::model::ModelConfig::from_hf(j, a.model + "/config.json");
  } catch (const std::exception&) {
    return;
  }
  check_groups(a.configs, *c);
}

// Creates and removes a probe file in dir: whether a file can really be written there (permission
// bits do not tell, e.g. on a read-only mount or for root).
inline void probe_dir(const std::string& flag, const std::string& value, const std::filesystem::path& dir) {
  const std::string probe = (dir / (".awq_llama_probe." + std::to_string(::getpid()))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    const int e = errno;
    throw awq::Error(flag + " " + value + ": cannot write in directory '" + dir.string() + "': " + std::strerror(e));
  }
  ::close(fd);
  ::unlink(probe.c_str());
}

// An output file: its directory exists and is writable; the file itself, if present, is a file.
inline void check_output_file(const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  awq::detail::require(!fs::is_directory(path, ec), flag, " ", path, ": is a directory (accepted: a file name)");
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  awq::detail::require(fs::is_directory(dir, ec), flag, " ", path, ": directory '", dir.string(), "' does not exist");
  try {  // the file and the temporary name the write will use
    awq::io::check_atomic_target(path);
  } catch (const awq::Error& e) {
    throw awq::Error(flag + " " + path + ": " + e.what());
  }
  probe_dir(flag, path, dir);
}

// An output directory, created later if missing: its nearest existing ancestor is a writable directory.
inline void check_output_dir(const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p = fs::absolute(fs::path(path), ec);
  while (!p.empty() && !fs::exists(p, ec) && p != p.parent_path()) p = p.parent_path();
  awq::detail::require(fs::is_directory(p, ec), flag, " ", path, ": '", p.string(), "' is not a directory");
  probe_dir(flag, path, p);
}

// p absolute, its symbolic links resolved as far as it exists, without a trailing slash: the form
// in which two spellings of one location compare equal.
inline std::filesystem::path resolved(const std::string& p) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p, ec), ec);
  if (ec) r = fs::absolute(p, ec).lexically_normal();
  if (!r.has_filename() && r.has_relative_path()) r = r.parent_path();
  return r;
}

// Whether `inner` is `outer` or lies under it (both resolved).
inline bool within(const std::filesystem::path& inner, const std::filesystem::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

// Whether paths a and b name one file: equivalent where both exist (a hard link, a symbolic link),
// else the same resolved path.
inline bool same_file(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) {
    const bool eq = fs::equivalent(a, b, ec);
    if (!ec) return eq;
  }
  return resolved(a) == resolved(b);
}

// No output may destroy an input: --report is none of the input files (nor a file of a --model
// directory), --export and --checkpoint hold no input, and they are apart from each other (the
// export replaces DIR/<config>, the checkpoint's blocks with it). Checked before anything is read.
inline void check_outputs_apart(const Args& a) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::pair<const char*, std::string>> inputs = {{"--model", a.model}, {"--calib-text", a.calib_text}};
  if (a.eval_tokens > 0) inputs.emplace_back("--eval-text", a.eval_text);
  for (const auto& [flag, in] : inputs) {
    if (!a.report.empty() && fs::is_directory(in, ec)) {  // a model directory: each file it holds is an input
      if (fs::exists(a.report, ec))
        for (const auto& e : fs::directory_iterator(in, ec))
          awq::detail::require(!fs::equivalent(a.report, e.path(), ec), "--report ", a.report, " is the same file as ", e.path().string(),
                               " of ", flag, " ", in, " (the report would overwrite it)");
    } else if (!a.report.empty()) {
      awq::detail::require(!same_file(a.report, in), "--report ", a.report, " is the same file as ", flag, " ", in,
                           " (the report would overwrite it)");
    }
    for (const auto& [out_flag, out] : {std::pair{"--export", a.export_dir}, std::pair{"--checkpoint", a.checkpoint_dir}})
      awq::detail::require(out.empty() || !within(resolved(in), resolved(out)), out_flag, " ", out, " holds ", flag, " ", in,
                           " (its directories are replaced or written; accepted: a directory apart from the inputs)");
  }
  if (a.export_dir.empty() || a.checkpoint_dir.empty()) return;
  const fs::path e = resolved(a.export_dir), c = resolved(a.checkpoint_dir);
  awq::detail::require(e != c, "--export ", a.export_dir, " and --checkpoint ", a.checkpoint_dir,
                       " are the same directory (the export would replace the checkpoint's blocks)");
  awq::detail::require(!within(c, e), "--checkpoint ", a.checkpoint_dir, " is inside --export ", a.export_dir,
                       " (accepted: two directories apart)");
  awq::detail::require(!within(e, c), "--export ", a.export_dir, " is inside --checkpoint ", a.checkpoint_dir,
                       " (accepted: two directories apart)");
}

// An input file: a readable regular file.
inline void check_input_file(const std::string& flag, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  awq::detail::require(fs::exists(path, ec), flag, " ", path, ": no such file");
  awq::detail::require(fs::is_regular_file(path, ec), flag, " ", path, ": not a regular file");
  std::ifstream f(path, std::ios::binary);
  awq::detail::require(static_cast<bool>(f), flag, " ", path, ": cannot be read: ", std::strerror(errno));
}

}  // namespace detail

/// \brief The checks that touch the file system, run before the model is loaded: the inputs
///        exist and are readable (the model a GGUF file or a Hugging Face directory, the texts
///        valid UTF-8), and every output
///        location can be written. Also applies --threads to the library. For generate: the model only.
inline void check_environment(const Args& a) {
  std::error_code ec;
  awq::detail::require(std::filesystem::exists(a.model, ec), "--model ", a.model, ": no such file or directory");
  std::string why;
  const Format f = detect_format(a.model, why);
  awq::detail::require(f == Format::gguf || f == Format::hf_directory, "--model ", a.model,
                       ": not a GGUF file or a Hugging Face model directory (",
                       f == Format::safetensors ? std::string("a safetensors file: give its directory") : why, ")");
  if (f == Format::gguf) detail::check_input_file("--model", a.model);
  awq::backend::cpu::set_threads(a.threads);
  if (a.cmd == "generate") return;
  detail::check_input_file("--calib-text", a.calib_text);
  if (a.eval_tokens > 0) detail::check_input_file("--eval-text", a.eval_text);
  detail::check_outputs_apart(a);
  (void)read_text(a.calib_text, "--calib-text");
  if (a.eval_tokens > 0) (void)read_text(a.eval_text, "--eval-text");
  if (f == Format::hf_directory) detail::check_hf_groups(a);
  if (!a.report.empty()) detail::check_output_file("--report", a.report);
  if (!a.export_dir.empty()) detail::check_output_dir("--export", a.export_dir);
  if (!a.checkpoint_dir.empty()) detail::check_output_dir("--checkpoint", a.checkpoint_dir);
}

/// \brief Warnings about a run that is valid but probably not what was meant, one line each.
inline std::vector<std::string> warnings(const Args& a) {
  std::vector<std::string> w;
  std::error_code ec;
  if (a.cmd == "quantize" && a.eval_tokens > 0 && std::filesystem::equivalent(a.calib_text, a.eval_text, ec))
    w.push_back("warning: --eval-text " + a.eval_text + " is the same file as --calib-text " + a.calib_text +
                ": the perplexity is measured on the calibration text, which flatters the quantized models");
  return w;
}

namespace detail {

// The length of the C++ name that qualifies the message segment at m[p]: "awq::io::GgufFile: ",
// "awq: ", any "A::b: ", or (`start`: the message's own start) a class name such as
// "BpeTokenizer: "; 0 if none.
inline std::size_t qualifier_length(const std::string& m, std::size_t p, bool start) {
  const auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  std::size_t j = p;
  bool scoped = false;
  while (j < m.size() && (word(m[j]) || m.compare(j, 2, "::") == 0)) {
    if (m[j] == ':') scoped = true, ++j;
    ++j;
  }
  if (j == p || m.compare(j, 2, ": ") != 0 || !std::isalpha(static_cast<unsigned char>(m[p]))) return 0;
  const std::string name = m.substr(p, j - p);
  bool camel = start && std::isupper(static_cast<unsigned char>(name[0]));  // BpeTokenizer, FpLinear: not GGUF, not a path
  int humps = 0;
  for (std::size_t k = 1; camel && k < name.size(); ++k) {
    if (!std::isalpha(static_cast<unsigned char>(name[k]))) camel = false;
    else if (std::isupper(static_cast<unsigned char>(name[k])) && std::islower(static_cast<unsigned char>(name[k - 1]))) ++humps;
  }
  return name == "awq" || scoped || (camel && humps > 0) ? j + 2 - p : 0;
}

}  // namespace detail

/// \brief The message of a library error without the library's internals: the C++ names that
///        qualify it (at its start, or after a "--option VALUE: " the tool put in front) and
///        nlohmann's exception ids ("[json.exception.parse_error.101] ").
inline std::string strip_internals(std::string m) {
  const std::string json = "[json.exception.";
  for (std::size_t p; (p = m.find(json)) != std::string::npos;) {
    const std::size_t e = m.find(']', p);
    if (e == std::string::npos) break;
    m.erase(p, e + 1 - p + (m.compare(e + 1, 1, " ") == 0 ? 1 : 0));
  }
  bool start = true;  // at the message's start: nothing stripped or passed yet
  for (std::size_t p = 0; p < m.size(); start = false) {
    if (const std::size_t n = detail::qualifier_length(m, p, start)) {
      m.erase(p, n);
      continue;  // another may follow (awq::model::HfSource: awq::io::HfCheckpoint: ...), a path after it
    }
    const std::size_t next = std::min(m.find(": ", p), m.find(" (", p));  // the next segment
    if (next == std::string::npos) break;
    p = next + 2;
  }
  return m;
}

/// \brief The one-line message for an exception that reached main: awq::Error's own text without
///        the library's internals (strip_internals), and plain words for the standard library's
///        (out of memory, a file-system call's path).
inline std::string describe(const std::exception& e) {
  std::string m;
  if (dynamic_cast<const std::bad_alloc*>(&e))
    m = "out of memory (a smaller --seq-len, --calib-seqs or --eval-tokens needs less)";
  else if (const auto* f = dynamic_cast<const std::filesystem::filesystem_error*>(&e))
    m = f->path1().string() + ": " + f->code().message();
  else
    m = strip_internals(e.what());
  for (char& c : m)
    if (c == '\n') c = ' ';
  return m;
}

/// \brief Checks the model's size against --layers (1 to its blocks) and --seq-len (at most its
///        context length; 0 = not stated). `A` is Args or any arguments with the same fields (the
///        job's): call it once the model's header is read, before its weights are.
template <class A>
void check_model(const A& a, long long blocks, long long context) {
  awq::detail::require(a.layers <= blocks, "--layers ", a.layers, ": the model has ", blocks, " blocks (accepted: 1 to ", blocks, ")");
  awq::detail::require(context <= 0 || a.seq_len <= context, "--seq-len ", a.seq_len, ": the model's context length is ", context,
                       " (accepted: 2 to ", context, ")");
}

/// check_model with the sizes from a llama GGUF's metadata, and check_groups.
template <class A>
void check_model(const A& a, const awq::io::GgufFile& g) {
  const std::string arch = g.has("general.architecture") ? g.get_string("general.architecture") : std::string("(none)");
  awq::detail::require(arch == "llama", "--model ", a.model, ": architecture '", arch, "' (accepted: llama)");
  check_model(a, g.get_int("llama.block_count"), g.has("llama.context_length") ? g.get_int("llama.context_length") : 0);
  check_groups(a.configs, awq::model::ModelConfig::from_gguf(g, a.model));
}

/// \brief Checks the token counts once the texts are tokenized, before any evaluation: the
///        calibration text holds --calib-seqs sequences of --seq-len, the evaluation text at least
///        one. Returns --calib-seqs. `A` as for check_model.
template <class A>
int calibration_sequences(const A& a, std::size_t calib_tokens, std::size_t eval_tokens) {
  const long long avail = static_cast<long long>(calib_tokens) / a.seq_len;
  awq::detail::require(a.calib_seqs <= avail, "--calib-seqs ", a.calib_seqs, ": --calib-text ", a.calib_text, " has ", calib_tokens,
                       " tokens, ", avail, " sequences of --seq-len ", a.seq_len, " (accepted: 1 to ", avail, ", or a longer text)");
  awq::detail::require(a.eval_tokens == 0 || eval_tokens >= static_cast<std::size_t>(a.seq_len), "--eval-text ", a.eval_text, ": ", eval_tokens,
                       " tokens, fewer than one sequence of --seq-len ", a.seq_len);
  return a.calib_seqs;
}

}  // namespace awq_cli
