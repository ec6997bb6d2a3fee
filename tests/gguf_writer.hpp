// Test support: writes GGUF files byte by byte (little-endian), for the GGUF reader tests, the
// fault table and the fuzz seeds. Not part of the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace awq_test {

struct GgufWriter {
  std::vector<std::uint8_t> b;

  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  /// A GGUF string: u64 length, then the bytes.
  void str(const std::string& s) {
    put<std::uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  /// Zero bytes up to a multiple of a.
  void align(std::size_t a) {
    while (b.size() % a) b.push_back(0);
  }
  /// Magic, version, tensor count, metadata count.
  void header(std::uint32_t version, std::uint64_t n_tensors, std::uint64_t n_kv) {
    put<std::uint32_t>(0x46554747u);
    put<std::uint32_t>(version);
    put<std::uint64_t>(n_tensors);
    put<std::uint64_t>(n_kv);
  }
  /// One tensor directory entry: name, n_dims, dims (innermost first), ggml type, data offset.
  void tensor_info(const std::string& name, const std::vector<std::uint64_t>& dims, std::uint32_t type, std::uint64_t offset) {
    str(name);
    put<std::uint32_t>(static_cast<std::uint32_t>(dims.size()));
    for (auto d : dims) put<std::uint64_t>(d);
    put<std::uint32_t>(type);
    put<std::uint64_t>(offset);
  }
};

}  // namespace awq_test
