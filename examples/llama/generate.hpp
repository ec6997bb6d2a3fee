// awq_llama generate: open the model (a GGUF file, a Hugging Face directory, or an AWQ checkpoint
// directory), tokenize and check the prompt against the context before any weight is read, load
// the weights once, generate, and print the text on stdout as it comes and the prefill and decode
// rates on stderr. Written once over a generation backend: CpuGeneration (llama/generate_cpu.hpp:
// 4-bit linears through W4Linear, the rest fp32) or CudaGeneration (llama/generate_cuda.cu).
#pragma once

#include <awq/model/hf_source.hpp>
#include <awq/model/source.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "llama/awq_dir.hpp"
#include "llama/engine.hpp"
#include "llama/tokenizer.hpp"

namespace awq_example {

/// Writes the complete UTF-8 characters of `pending` and keeps an incomplete tail (a token may end
/// inside a character).
inline void flush_utf8(std::string& pending, bool all) {
  std::size_t keep = 0;
  if (!all) {
    for (std::size_t back = 1; back <= std::min<std::size_t>(3, pending.size()); ++back) {
      const auto ch = static_cast<unsigned char>(pending[pending.size() - back]);
      if ((ch & 0xC0u) == 0x80u) continue;  // a continuation byte: look further back
      const std::size_t len = ch >= 0xF0 ? 4 : ch >= 0xE0 ? 3 : ch >= 0xC0 ? 2 : 1;
      keep = len > back ? back : 0;
      break;
    }
  }
  std::fwrite(pending.data(), 1, pending.size() - keep, stdout);
  std::fflush(stdout);
  pending.erase(0, pending.size() - keep);
}

/// Prefill and decode on loaded weights; returns the exit code.
template <class B, class Linear>
int run_generation(const awq_cli::Args& a, LlamaWeights<Linear>&& weights, const std::vector<int>& prompt, BpeTokenizer& tok, int eos,
                   double load_s, const std::string& kind) {
  typename B::template Model<Linear> model(std::move(weights));
  typename B::template Engine<Linear> engine(model, static_cast<int>(prompt.size()) + a.max_new_tokens);
  Sampler pick(SamplingOptions{a.temperature, a.top_p, a.seed});
  std::string pending;
  const Generation g = generate(engine, prompt, a.max_new_tokens, pick, eos, [&](int id) {
    pending += tok.decode({id});
    flush_utf8(pending, false);
  });
  flush_utf8(pending, true);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "%s: load %.2fs; prefill %zu tokens in %.3fs (%.1f tokens/s); decode %d tokens in %.3fs (%.2f tokens/s)%s\n", kind.c_str(),
               load_s, prompt.size(), g.prefill_s, static_cast<double>(prompt.size()) / g.prefill_s, g.decode_steps, g.decode_s,
               g.decode_steps > 0 ? g.decode_steps / g.decode_s : 0.0, g.stopped_at_eos ? "; stopped at EOS" : "");
  return 0;
}

/// The prompt's tokens, checked: not empty, and with --max-new-tokens within `context` (0: unknown).
inline std::vector<int> prompt_tokens(const awq_cli::Args& a, BpeTokenizer& tok, long long context) {
  std::vector<int> p = tok.encode(a.prompt);
  awq::detail::require(!p.empty(), "--prompt: the prompt encodes to no tokens");
  awq::detail::require(context <= 0 || static_cast<long long>(p.size()) <= context, "--prompt: ", p.size(),
                       " tokens, longer than the model's context of ", context, " tokens");
  awq::detail::require(context <= 0 || static_cast<long long>(p.size()) + a.max_new_tokens <= context, "--max-new-tokens ",
                       a.max_new_tokens, ": with the prompt's ", p.size(), " tokens it exceeds the model's context of ", context,
                       " tokens (accepted: 1 to ", context - static_cast<long long>(p.size()), ")");
  return p;
}

/// \brief The generate command on backend B: B::Fp and B::W4 the linears, B::Model<L> made from
///        LlamaWeights<L>&&, B::Engine<L> from (Model<L>&, capacity), B::fp and B::w4 their names.
template <class B>
int run_generate(const awq_cli::Args& a) {
  using Fp = typename B::Fp;
  const std::string fp = B::fp;
  namespace fs = std::filesystem;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto since = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  if (!fs::is_directory(a.model)) {
    const auto src = awq::model::GgufSource::open(a.model);
    awq::model::Llama::check(src.config());
    awq::detail::require(!a.dequantize, "--dequantize: ", a.model, " is not an AWQ checkpoint (its weights run in ", fp, " already)");
    BpeTokenizer tok(src.gguf());
    // The context and EOS as ModelConfig::from_gguf read and checked them (positive, in the vocabulary).
    const std::vector<int> prompt = prompt_tokens(a, tok, src.config().max_positions);
    const int eos = src.config().eos_token;
    return run_generation<B>(a, load_fp_weights<Fp>(src), prompt, tok, eos, since(), fp + " (GGUF dequantized)");
  }
  const auto src = awq::model::HfSource::open(a.model);
  const auto& cj = src.config_json();
  const bool quantized = is_quantized(cj);
  if (quantized) check_quantization_config(cj, a.model + "/config.json");
  awq::detail::require(quantized || !a.dequantize, "--dequantize: ", a.model, " has no quantization_config (its weights run in ", fp,
                       " already)");
  awq::model::Llama::check(src.config());
  BpeTokenizer tok = BpeTokenizer::from_hf_dir(a.model);
  // max_position_embeddings and eos_token_id (the first of a list) as ModelConfig::from_hf read and
  // checked them: a malformed value is an error there, not "no context" or "no EOS" here.
  const std::vector<int> prompt = prompt_tokens(a, tok, src.config().max_positions);
  const int eos = src.config().eos_token;
  if (!quantized) return run_generation<B>(a, load_fp_weights<Fp>(src), prompt, tok, eos, since(), fp);
  if (a.dequantize) return run_generation<B>(a, load_awq_weights<Fp>(src), prompt, tok, eos, since(), fp + " (AWQ dequantized)");
  return run_generation<B>(a, load_awq_weights<typename B::W4>(src), prompt, tok, eos, since(), B::w4);
}

}  // namespace awq_example
