// libFuzzer target: the safetensors reader on arbitrary bytes. Every input must either parse or
// throw awq::Error; anything else (a crash, a sanitizer report, another exception, a huge
// allocation) is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "awq/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = awq::io::SafetensorsFile::from_bytes(std::vector<std::uint8_t>(data, data + size), "fuzz");
    std::size_t total = 0;
    for (const auto& name : f.names()) {
      const auto v = f.view(name);
      if (v.bytes.size) total += v.bytes.data[0] + v.bytes.data[v.bytes.size - 1];  // touch both ends of the view
      total += f.tensor(name).data.size();
    }
    (void)total;
    (void)f.metadata();
  } catch (const awq::Error&) {
  }
  return 0;
}
