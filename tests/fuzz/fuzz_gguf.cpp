// libFuzzer target: the GGUF reader on arbitrary bytes, including dequantization of every
// (small) tensor. Every input must either parse or throw awq::Error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "awq/io/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto g = awq::io::GgufFile::from_bytes(std::vector<std::uint8_t>(data, data + size), "fuzz");
    std::size_t total = 0;
    for (const auto& [key, v] : g.metadata()) total += key.size() + v.length() + awq::io::gguf_value_type_name(v.type).size();
    for (const auto& t : g.tensors()) {
      const auto b = g.bytes(t.name);
      total += b.data[0] + b.data[b.size - 1] + awq::io::gguf_type_name(t.type).size();  // touch both ends of the view
      if (t.n_elements <= (1u << 20)) (void)g.dequantize(t.name);
    }
    (void)total;
  } catch (const awq::Error&) {
  }
  return 0;
}
