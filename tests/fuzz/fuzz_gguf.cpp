// libFuzzer target: the GGUF reader on arbitrary bytes, including dequantization of every
// (small) tensor. Every input must either parse or throw awq::Error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "awq/io/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto g = awq::io::GgufFile::from_bytes(std::vector<std::uint8_t>(data, data + size), "fuzz");
    for (const auto& [key, v] : g.metadata()) {
      (void)key;
      (void)v;
    }
    for (const auto& t : g.tensors())
      if (t.n_elements <= (1u << 20)) (void)g.dequantize(t.name);
  } catch (const awq::Error&) {
  }
  return 0;
}
