/// \file
/// \brief The final quantization of a linear as it is exported: codes, zeros and fp16 scales,
///        and the weight replaced by its dequantized value, so that what is evaluated afterwards
///        is exactly the exported checkpoint.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/config.hpp"
#include "awq/quantizer.hpp"
#include "awq/view.hpp"

namespace awq::model {

/// \brief A quantized linear [out, in]: one code per weight, zeros and fp16 scales per (row, group).
struct QuantizedLinear {
  index_t out = 0;                   ///< out_features
  index_t in = 0;                    ///< in_features
  index_t groups = 0;                ///< in / group size
  std::vector<std::uint8_t> codes;   ///< [out, in]
  std::vector<std::uint8_t> zeros;   ///< [out, groups], stored codes
  std::vector<Eigen::half> scales;   ///< [out, groups]
};

/// Quantizes w with the reference's rules, keeps those codes and zeros, rounds the scales to fp16,
/// and replaces w by (q − z)·scale16 in float. The codes are the ones the clip search judged:
/// re-deriving them with the fp16 scale (as AutoAWQ's packer does) moves every clamped weight
/// that sits on a rounding tie (±c at c / scale = (2^b − 1) / 2) to a code the search never saw.
inline QuantizedLinear finalize_linear(const MatrixView<float>& w, const QuantSpec& spec) {
  QuantizedLinear q;
  q.out = w.rows();
  q.in = w.cols();
  q.groups = q.in / spec.group_for(q.in);
  const index_t g = q.in / q.groups;
  q.codes.resize(static_cast<std::size_t>(q.out * q.in));
  std::vector<float> s(static_cast<std::size_t>(q.out * q.groups)), z(s.size());
  quantize(spec, w, make_row_major(q.codes.data(), q.out, q.in),
           {{}, make_row_major(s.data(), q.out, q.groups), make_row_major(z.data(), q.out, q.groups)});
  q.scales.resize(s.size());
  q.zeros.resize(s.size());
  for (index_t r = 0; r < q.out; ++r)
    for (index_t j = 0; j < q.groups; ++j) {
      const std::size_t gi = static_cast<std::size_t>(r * q.groups + j);
      q.scales[gi] = Eigen::half(s[gi]);
      q.zeros[gi] = static_cast<std::uint8_t>(z[gi]);
      const float s16 = static_cast<float>(q.scales[gi]);
      for (index_t i = j * g; i < (j + 1) * g; ++i)
        w(r, i) = (static_cast<float>(q.codes[static_cast<std::size_t>(r * q.in + i)]) - z[gi]) * s16;
    }
  return q;
}

/// \brief finalize_linear where the weight lives: `Finalize<Backend>::run(w, spec)` with `w` in
///        the backend's memory, replaced there by its dequantized value; the codes, zeros and
///        scales come back to the host. Declared only: backend::cpu is below, backend::cuda in
///        awq/model/finalize.cuh, so a missing include fails to compile instead of mixing definitions.
template <class Backend>
struct Finalize;

/// \brief On the host: finalize_linear itself.
template <>
struct Finalize<backend::cpu> {
  /// finalize_linear(w, spec).
  static QuantizedLinear run(const MatrixView<float>& w, const QuantSpec& spec) { return finalize_linear(w, spec); }
};

}  // namespace awq::model
