// Test support: golden-data loading and random weight generators. Not part of the library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "awq/search/scale.hpp"

#ifndef AWQ_GOLDEN_DIR
#error "AWQ_GOLDEN_DIR must be set by CMake"
#endif

namespace awq_test {

/// A float32 tensor read from tests/golden/<case>/<name>.f32 with its shape from meta.json.
struct Tensor {
  std::vector<float> data;
  std::vector<long> shape;
  long rows() const { return shape.size() == 1 ? 1 : shape[0]; }
  long cols() const {
    long c = 1;
    for (std::size_t i = shape.size() == 1 ? 0 : 1; i < shape.size(); ++i) c *= shape[i];
    return c;
  }
};

inline std::string golden_dir(const std::string& case_name) { return std::string(AWQ_GOLDEN_DIR) + "/" + case_name; }

inline nlohmann::json golden_meta(const std::string& case_name) {
  std::ifstream f(golden_dir(case_name) + "/meta.json");
  if (!f) throw std::runtime_error("missing golden meta for " + case_name);
  return nlohmann::json::parse(f);
}

inline Tensor golden_tensor(const std::string& case_name, const std::string& name) {
  const auto meta = golden_meta(case_name);
  const auto& t = meta.at("tensors").at(name);
  Tensor out;
  long n = 1;
  for (const auto& d : t.at("shape")) {
    out.shape.push_back(d.get<long>());
    n *= d.get<long>();
  }
  out.data.resize(static_cast<std::size_t>(n));
  std::ifstream f(golden_dir(case_name) + "/" + t.at("file").get<std::string>(), std::ios::binary);
  f.read(reinterpret_cast<char*>(out.data.data()), static_cast<std::streamsize>(n * 4));
  if (!f || f.gcount() != n * 4) throw std::runtime_error("short golden file " + case_name + "/" + name);
  return out;
}

/// Weight kinds for random tests.
enum class Dist { normal, student_t3, outliers };

/// rows × cols row-major weights: N(0, std), Student-t(3)·std, or N(0, std) with 4 entries ×50 a row.
inline std::vector<double> random_weights(long rows, long cols, Dist d, std::uint64_t seed, double std = 0.02) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::student_t_distribution<double> t3(3.0);
  std::vector<double> w(static_cast<std::size_t>(rows * cols));
  for (long r = 0; r < rows; ++r) {
    for (long c = 0; c < cols; ++c) {
      const double v = d == Dist::student_t3 ? t3(rng) : n01(rng);
      w[static_cast<std::size_t>(r * cols + c)] = v * std;
    }
    if (d == Dist::outliers) {
      std::uniform_int_distribution<long> pick(0, cols - 1);
      for (int k = 0; k < 4; ++k) w[static_cast<std::size_t>(r * cols + pick(rng))] *= 50.0;
    }
  }
  return w;
}

template <class T>
std::vector<T> cast_vec(const std::vector<double>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<T>(v[i]);
  return out;
}

/// A poison value so that any element a kernel forgot to write fails the comparison.
inline float poison() { return std::nanf(""); }

/// |a − b| / |b| (b = 0 counts as 1e-30).
inline double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); }

/// The golden single-linear scale search (llm-awq, then AutoAWQ duo scaling): `search(x, w, opt)`
/// (golden x [tokens, in] and w [out, in]; returns a ScaleSearchResult<float>) must pick the
/// reference's α index and reproduce its 20 losses and its scales to 1e-5.
template <class Search>
void check_golden_scale_search(Search&& search) {
  const std::string c = "scale_search_linear_512x512x384";
  const Tensor x = golden_tensor(c, "x"), w = golden_tensor(c, "w");
  const auto meta = golden_meta(c);
  for (bool duo : {false, true}) {
    CAPTURE(duo);
    const auto& r = meta.at("results").at(duo ? "autoawq_duo" : "llm_awq");
    const Tensor scales = golden_tensor(c, duo ? "scales_duo" : "scales");
    awq::ScaleSearchOptions opt;
    opt.quant = awq::QuantSpec{4, 128, true};
    opt.duo_scaling = duo;
    const auto res = search(x, w, opt);
    CHECK(res.best_index == r.at("best_ratio_index").template get<int>());
    REQUIRE(res.losses.size() == 20);
    for (std::size_t i = 0; i < 20; ++i) CHECK(rel(res.losses[i], r.at("losses")[i].template get<double>()) < 1e-5);
    double worst = 0;
    for (std::size_t i = 0; i < scales.data.size(); ++i) worst = std::max(worst, rel(res.scales[i], scales.data[i]));
    CHECK(worst < 1e-5);
  }
}

/// n raw little-endian float32 values from `path` (the arch goldens' layout).
inline std::vector<float> read_f32(const std::string& path, std::size_t n) {
  std::vector<float> v(n);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * 4));
  if (f.gcount() != static_cast<std::streamsize>(n * 4)) throw std::runtime_error("short file " + path);
  return v;
}

/// max |a − b| / max |b| over n values.
inline double max_rel_err(const float* a, const float* b, std::size_t n) {
  double d = 0, m = 0;
  for (std::size_t i = 0; i < n; ++i) {
    d = std::max(d, std::fabs(double(a[i]) - b[i]));
    m = std::max(m, std::fabs(double(b[i])));
  }
  return d / m;
}

/// Worst |h_ij − Σ_r x_ri·x_rj| / (|x_i|·|x_j|) of a Gram product h [k, k] of x [t, k] (both
/// row-major), the reference in float64: relative to the norms, so that a near-zero entry of H is
/// judged by the size of what it sums, as the float rounding of those sums is.
template <class T>
double gram_worst_relative(const std::vector<T>& x, long t, long k, const float* h) {
  double worst = 0;
  for (long i = 0; i < k; ++i)
    for (long j = 0; j < k; ++j) {
      double ref = 0, ni = 0, nj = 0;
      for (long r = 0; r < t; ++r) {
        const double a = x[static_cast<std::size_t>(r * k + i)], b = x[static_cast<std::size_t>(r * k + j)];
        ref += a * b;
        ni += a * a;
        nj += b * b;
      }
      worst = std::max(worst, std::fabs(h[static_cast<std::size_t>(i * k + j)] - ref) / std::sqrt(ni * nj));
    }
  return worst;
}

}  // namespace awq_test
