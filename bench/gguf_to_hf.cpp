// Writes a GGUF Llama model (all its blocks, or the first N) as a Hugging Face fp32 directory, for
// the GGUF-vs-HF check of the tool on the GPU (bench/gpu_fast.sh, stage m).
// usage: gguf_to_hf MODEL.gguf DIR [LAYERS]
#include <cstdio>
#include <exception>
#include <string>

#include "llama/export.hpp"

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: gguf_to_hf MODEL.gguf DIR [LAYERS]\n");
    return 2;
  }
  try {
    const auto src = awq::model::GgufSource::open(argv[1]);
    const int layers = argc == 4 ? std::stoi(argv[3]) : src.config().layers;
    awq_example::write_gguf_as_hf(src, argv[2], layers);
    std::printf("%s: %d blocks written as a Hugging Face directory\n", argv[2], layers);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gguf_to_hf: %s\n", e.what());
    return 1;
  }
}
