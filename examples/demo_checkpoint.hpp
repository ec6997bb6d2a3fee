// A small AutoAWQ-layout checkpoint written from random weights, for the examples that load one
// (awq_checkpoint.cpp, cuda_backend.cu) when no file is given. It is also how an exporter lays a
// W4 linear out: qweight I32 [in, out/8], qzeros I32 [in/g, out/8], scales F16 [in/g, out].
#pragma once

#include <awq/awq.hpp>
#include <awq/io/safetensors.hpp>

#include <Eigen/Core>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace demo {

/// Quantizes w [out, in] W4 with zero point, groups of `group`, and adds it as `name`.
inline void add_awq_linear(awq::io::SafetensorsWriter& file, const std::string& name, const Eigen::MatrixXf& w, int group) {
  using Codes = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const awq::index_t out = w.rows(), in = w.cols(), groups = in / group;
  Codes codes(out, in);
  RowMajor scales(out, groups), zeros(out, groups);
  awq::quantize(awq::QuantSpec{4, group, true}, awq::as_view(w), awq::as_view(codes),
                {{}, awq::as_view(scales), awq::as_view(zeros)});
  const Codes zero_codes = zeros.cast<std::uint8_t>();
  std::vector<std::int32_t> qweight(static_cast<std::size_t>(in * out / 8)), qzeros(static_cast<std::size_t>(groups * out / 8));
  std::vector<Eigen::half> sc(static_cast<std::size_t>(groups * out));
  awq::pack_awq_gemm(awq::as_view(codes), awq::make_row_major(qweight.data(), in, out / 8));
  awq::pack_awq_gemm(awq::as_view(zero_codes), awq::make_row_major(qzeros.data(), groups, out / 8));
  awq::transpose_scales(awq::as_view(scales), awq::make_row_major(sc.data(), groups, out));
  file.add_typed(name + ".qweight", "I32", {in, out / 8}, qweight);
  file.add_typed(name + ".qzeros", "I32", {groups, out / 8}, qzeros);
  file.add_typed(name + ".scales", "F16", {groups, out}, sc);
}

/// Writes two W4 g128 linears of a Llama MLP as `file_name` in the temporary directory; returns the path.
inline std::string write_checkpoint(const std::string& file_name) {
  const std::string path = (std::filesystem::temp_directory_path() / file_name).string();
  std::mt19937 rng(3);
  std::normal_distribution<float> n01(0.0f, 0.02f);
  awq::io::SafetensorsWriter file;
  for (const auto& [name, out, in] : {std::tuple<const char*, int, int>{"model.layers.0.mlp.up_proj", 512, 256},
                                      {"model.layers.0.mlp.down_proj", 256, 512}}) {
    Eigen::MatrixXf w(out, in);
    for (awq::index_t i = 0; i < w.size(); ++i) w.data()[i] = n01(rng);
    add_awq_linear(file, name, w, 128);
  }
  file.metadata("format", "pt");
  file.write(path);
  return path;
}

}  // namespace demo
