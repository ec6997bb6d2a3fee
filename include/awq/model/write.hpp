/// \file
/// \brief A quantized block's tensors into a checkpoint writer: the tensors io::AwqCheckpoint reads,
///        and at 4 bits the ones AutoAWQ, vLLM and transformers load.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <string>
#include <vector>

#include "awq/error.hpp"
#include "awq/model/finalize.hpp"
#include "awq/model/pipeline.hpp"
#include "awq/pack.hpp"

namespace awq::model {

/// \brief Writes linear `name`'s quantized tensors through `w` (io::SafetensorsWriter,
///        io::ShardedSafetensorsWriter, or any type with add_typed(name, dtype, shape, values)).
///
/// 4 bits: the AutoAWQ GEMM layout, `qweight` int32 [in, out/8], `qzeros` int32 [groups, out/8],
/// `scales` fp16 [groups, out] (out a multiple of 8). Other widths: the plain layout, `qweight`
/// uint8 [out, plain_row_bytes(in, bits)] (bit streams, awq/pack.hpp), `qzeros` uint8 and `scales`
/// fp16 [out, groups].
template <class Writer>
void write_linear(Writer& w, const std::string& name, const QuantizedLinear& q) {
  detail::require(q.bits >= 2 && q.bits <= 8, "awq::model::write_linear: '", name, "' has bits ", q.bits,
                  " (a QuantizedLinear from a finalize has its spec's)");
  using V = std::vector<std::int64_t>;
  if (q.bits == 4) {
    const AwqGemmPacked p = pack_awq_gemm(q, q.bits);
    w.add_typed(name + ".qweight", "I32", V{q.in, q.out / 8}, p.qweight);
    w.add_typed(name + ".qzeros", "I32", V{q.groups, q.out / 8}, p.qzeros);
    w.add_typed(name + ".scales", "F16", V{q.groups, q.out}, p.scales);
  } else {
    const index_t rb = plain_row_bytes(q.in, q.bits);
    std::vector<std::uint8_t> packed(static_cast<std::size_t>(q.out * rb));
    pack_plain(q.bits, make_row_major(q.codes.data(), q.out, q.in), make_row_major(packed.data(), q.out, rb));
    w.add_typed(name + ".qweight", "U8", V{q.out, rb}, packed);
    w.add_typed(name + ".qzeros", "U8", V{q.out, q.groups}, q.zeros);
    w.add_typed(name + ".scales", "F16", V{q.out, q.groups}, q.scales);
  }
}

/// \brief Writes an unquantized tensor (a norm, a bias, an embedding) through `w` in fp16.
template <class Writer>
void write_fp16(Writer& w, const std::string& name, const std::vector<std::int64_t>& shape, const std::vector<float>& v) {
  std::vector<Eigen::half> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = Eigen::half(v[i]);
  w.add_typed(name, "F16", shape, h);
}

/// \brief Writes block `b` as quantize_model's sink receives it: its linears (write_linear) and
///        its other tensors (norms, biases, after the folds) in fp16 (write_fp16), each under `b.prefix`.
template <class Writer>
void write_block(Writer& w, const QuantizedBlock& b) {
  for (const auto& [name, q] : b.linears) write_linear(w, b.prefix + name, q);
  for (const auto& [name, v] : b.tensors) write_fp16(w, b.prefix + name, b.shapes.at(name), v);
}

}  // namespace awq::model
