// The GPU half of the cuda_backend example (nvcc; the host half, cuda_backend_main.cpp, reads the
// checkpoint with the host compiler: the CPU kernels and file readers are host-compiler code, as in
// an engine whose .cu files hold only what runs on or launches to the GPU).
#include <awq/cuda.cuh>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_backend.hpp"

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
namespace cu = awq::cuda;

/// A device copy of a row-major host matrix, and its view.
struct DeviceMatrix {
  cu::DeviceBuffer<float> buf;
  awq::index_t rows, cols;
  explicit DeviceMatrix(const RowMajor& m)
      : buf(std::vector<float>(m.data(), m.data() + m.size())), rows(m.rows()), cols(m.cols()) {}
  awq::MatrixView<const float> view() const { return awq::make_row_major<const float>(buf.data(), rows, cols); }
};

}  // namespace

bool cuda_device_present() { return cu::device_count() > 0; }

/// Scale search on q/k/v and the clip search on v: GPU against CPU. Returns the worst relative
/// difference of the scales and clip bounds.
double search_on_gpu() {
  const awq::index_t tokens = 256, in = 512, out = 256;
  std::mt19937 rng(11);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  RowMajor x(tokens, in);
  std::vector<RowMajor> w(3, RowMajor(out, in));
  for (awq::index_t c = 0; c < in; ++c)
    for (awq::index_t t = 0; t < tokens; ++t) x(t, c) = n01(rng) * (c % 61 == 0 ? 25.0f : 1.0f);
  for (auto& m : w)
    for (awq::index_t i = 0; i < m.size(); ++i) m.data()[i] = 0.02f * n01(rng);

  awq::ScaleSearchOptions opt;
  opt.quant = {4, 128, true};
  std::vector<awq::Linear<float>> host;
  for (const auto& m : w) host.push_back({awq::as_view(m)});
  const auto cpu = awq::search_scales(awq::as_view(x), host, awq::LinearsBlock<float>(host), opt);

  const DeviceMatrix dx(x), dq(w[0]), dk(w[1]), dv(w[2]);
  cudaStream_t stream = nullptr;
  cu::check(cudaStreamCreate(&stream), "cudaStreamCreate");
  double worst = 0;
  {
    cu::StreamScope on(stream);  // backend::cuda work of this thread goes to `stream`
    std::vector<awq::Linear<float>> dev{{dq.view()}, {dk.view()}, {dv.view()}};
    const auto gpu = awq::search_scales<awq::backend::cuda>(dx.view(), dev, awq::LinearsBlock<float, awq::backend::cuda>(dev), opt);
    for (std::size_t c = 0; c < cpu.scales.size(); ++c)
      worst = std::max(worst, std::fabs(static_cast<double>(gpu.scales[c]) - cpu.scales[c]) / std::fabs(cpu.scales[c]));
    std::printf("scale search: alpha %.2f on the GPU, %.2f on the CPU\n", gpu.best_alpha, cpu.best_alpha);

    const auto clip_gpu = awq::search_clip<awq::backend::cuda>(dv.view(), dx.view(), {opt.quant});
    const auto clip_cpu = awq::search_clip(awq::as_view(w[2]), awq::as_view(x), {opt.quant});
    long same = 0;
    for (std::size_t i = 0; i < clip_cpu.max_val.size(); ++i) same += clip_gpu.shrink_index[i] == clip_cpu.shrink_index[i];
    std::printf("clip search: %ld of %zu (row, group) choices equal to the CPU's\n", same, clip_cpu.max_val.size());
    cu::release_thread_workspace();
  }
  cu::check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  return worst;
}

std::vector<float> w4a16_on_gpu(const W4Linear& lin, const std::vector<float>& x, int m, bool tiled) {
  const int k = lin.k, n = lin.n, g = lin.group;
  std::vector<__half> xh(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) xh[i] = __float2half(x[i]);
  cu::DeviceBuffer<__half> dx(xh), dy(static_cast<std::size_t>(m) * n), dscales(static_cast<std::size_t>(k / g) * n);
  dscales.upload(reinterpret_cast<const __half*>(lin.scales), dscales.size());
  cu::DeviceBuffer<std::int32_t> dqw(static_cast<std::size_t>(k) * n / 8), dqz(static_cast<std::size_t>(k / g) * n / 8);
  dqw.upload(lin.qweight, dqw.size());
  dqz.upload(lin.qzeros, dqz.size());
  if (!tiled) {
    // The checkpoint's own layout: any M, no conversion.
    cu::W4A16Args a;
    a.x = dx.data();
    a.qweight = dqw.data();
    a.qzeros = dqz.data();
    a.scales = dscales.data();
    a.y = dy.data();
    a.m = m;
    a.k = k;
    a.n = n;
    a.group = g;
    cu::DeviceBuffer<unsigned char> ws(std::max<std::size_t>(1, cu::w4a16_workspace_bytes(m, k, n)));
    cu::check(cudaMemset(ws.data(), 0, ws.size()), "cudaMemset");  // zero-filled once
    a.workspace = ws.data();
    a.workspace_bytes = ws.size();
    cu::w4a16_matmul(a);
  } else {
    // The tiled layout: converted once on the host, faster from M = 4 on.
    const cu::TiledW4A16Device w(awq::tile_w4a16(awq::make_row_major(lin.qweight, k, n / 8),
                                                 awq::make_row_major(lin.qzeros, k / g, n / 8),
                                                 awq::make_row_major(lin.scales, k / g, n), g));
    cu::DeviceBuffer<unsigned char> ws(std::max<std::size_t>(1, cu::w4a16_tiled_workspace_bytes(m, k, n)));
    cu::check(cudaMemset(ws.data(), 0, ws.size()), "cudaMemset");
    cu::w4a16_matmul(w.args(dx.data(), dy.data(), m, ws.data(), ws.size()));
  }
  const std::vector<__half> yh = dy.download();  // synchronises
  std::vector<float> y(yh.size());
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = __half2float(yh[i]);
  return y;
}
