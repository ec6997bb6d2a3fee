// A consumer's use of the tiled W4A16 product: AutoAWQ tensors tiled once on the host, one
// product on the device (any M), checked against a float64 reference when a device is present.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "awq/kernels/cuda/w4a16_tiled.cuh"
#include "awq/layout/tiled.hpp"

int main() {
  const int m = 64, k = 256, n = 512, group = 128, groups = k / group;
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::int32_t> word(INT32_MIN, INT32_MAX);
  std::uniform_real_distribution<float> sd(0.01f, 0.03f), xd(-1.0f, 1.0f);
  std::vector<std::int32_t> qweight(static_cast<std::size_t>(k) * n / 8), qzeros(static_cast<std::size_t>(groups) * n / 8);
  std::vector<__half> scales(static_cast<std::size_t>(groups) * n), x(static_cast<std::size_t>(m) * k);
  for (auto& v : qweight) v = word(rng);
  for (auto& v : qzeros) v = word(rng);
  for (auto& v : scales) v = __float2half(sd(rng));
  for (auto& v : x) v = __float2half(xd(rng));
  const awq::TiledW4A16 t = awq::tile_w4a16(awq::make_row_major<const std::int32_t>(qweight.data(), k, n / 8),
                                            awq::make_row_major<const std::int32_t>(qzeros.data(), groups, n / 8),
                                            awq::make_row_major<const __half>(scales.data(), groups, n), group);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("consumer_cuda: built; no CUDA device, nothing run\n");
    return 0;
  }
  const awq::cuda::TiledW4A16Device w(t);
  awq::cuda::DeviceBuffer<__half> dx(x), dy(static_cast<std::size_t>(m) * n);
  awq::cuda::DeviceBuffer<unsigned char> ws(awq::cuda::w4a16_tiled_workspace_bytes(m, k, n));
  if (ws.size()) awq::cuda::check(cudaMemset(ws.data(), 0, ws.size()), "cudaMemset");
  awq::cuda::w4a16_matmul(w.args(dx.data(), dy.data(), m, ws.data(), ws.size()));
  awq::cuda::check(cudaDeviceSynchronize(), "w4a16_matmul");
  const std::vector<__half> y = dy.download();
  int bad = 0;
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < n; ++c) {
      double ref = 0.0, mag = 0.0;
      for (int kk = 0; kk < k; ++kk) {
        const int g = kk / group;
        const double s = static_cast<double>(__half2float(__ushort_as_half(t.scale_bits(g, c))));
        const double p = static_cast<double>(__half2float(x[static_cast<std::size_t>(r) * k + kk])) * (t.code(kk, c) - t.zero(g, c)) * s;
        ref += p;
        mag += std::fabs(p);
      }
      const double got = static_cast<double>(__half2float(y[static_cast<std::size_t>(r) * n + c]));
      if (!(std::fabs(got - ref) <= 2e-3 * mag + 1e-3 * std::fabs(ref))) ++bad;
    }
  std::printf("consumer_cuda: %d of %d outputs outside the bound (Hopper kernel %s)\n", bad, m * n,
              awq::cuda::detail::tiled_wgmma_available() ? "available" : "not available");
  return bad == 0 ? 0 : 1;
}
