// The decode engine of examples/llama on the real model (SmolLM2-135M, GGUF, fetched at set-up;
// skipped when absent): the fp32 engine's greedy continuation of a factual prompt.
#include <doctest/doctest.h>

#include <awq/model/source.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "llama/engine.hpp"
#include "llama/tokenizer.hpp"

TEST_CASE("generation: SmolLM2 fp32 continues \"The capital of France is\" with \" Paris\"") {
  const std::string model = AWQ_DATA_DIR "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(model)) {
    MESSAGE("skipped: " << model << " is absent (scripts/fetch_data.sh fetches it)");
    return;
  }
  const auto src = awq::model::GgufSource::open(model);
  awq_example::BpeTokenizer tok(src.gguf());
  const auto w = awq_example::load_fp_weights(src);
  const std::vector<int> prompt = tok.encode("The capital of France is");
  awq_example::LlamaEngine<awq_example::FpLinear> e(w, static_cast<int>(prompt.size()) + 4);
  awq_example::Sampler greedy(awq_example::SamplingOptions{});
  const auto g = awq_example::generate(e, prompt, 4, greedy, -1, [](int) {});
  const std::string text = tok.decode(g.tokens);
  MESSAGE("continuation: '" << text << "'");
  CHECK(text.rfind(" Paris", 0) == 0);
}
