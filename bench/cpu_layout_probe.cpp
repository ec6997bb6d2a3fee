// Probe (not built by CMake; run by hand): does the CPU W4A16 M = 1 kernel lose time to its memory
// order? One thread runs the AVX2 inner loop of kernels/cpu/w4a16.hpp (denormal decode: shift, 8
// AND, 8 FMA per 64 weights) over K = 4096 rows × half of N = 11008 columns, 8 rotating copies
// (≈ 90 MB, so DRAM serves it), in two orders:
//   strided    — the AutoAWQ [K, N/8] layout as the library reads it: 8-word blocks, 32-row chunks,
//                prefetch 32 words ahead along the row;
//   contiguous — each 8-word block's rows adjacent ([N/64][K][8 words]), prefetch 512 bytes ahead.
// The probe leaves out the kernel's per-group work (scales, zeros, permutation): in the library the
// contiguous order measured only 1.05x (bench/RESULTS.md), so it was not adopted.
//   g++ -O2 bench/cpu_layout_probe.cpp -o /tmp/probe && /tmp/probe      (figures: bench/RESULTS.md)
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <vector>
template <bool Contig>
__attribute__((target("avx2,fma"))) float run(const int32_t* q, const float* x, long K, long W) {
  const __m256i m0 = _mm256_set1_epi32(0xF), m1 = _mm256_set1_epi32(0xF0), m2 = _mm256_set1_epi32(0xF00), m3 = _mm256_set1_epi32(0xF000), m4 = _mm256_set1_epi32(0xF0000);
  __m256 tot = _mm256_setzero_ps();
  for (long k0 = 0; k0 < K; k0 += (Contig ? K : 32))
    for (long w0 = 0; w0 < W; w0 += 8) {
      __m256 a[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
      const long k1 = Contig ? K : k0 + 32;
      for (long k = k0; k < k1; ++k) {
        const int32_t* row = Contig ? q + (w0 * K + 8 * k) : q + (k * W + w0);
        _mm_prefetch((const char*)(row + (Contig ? 128 : 32)), _MM_HINT_T0);
        const __m256i v = _mm256_loadu_si256((const __m256i*)row);
        const __m256 xb = _mm256_broadcast_ss(x + k);
        const __m256i hi = _mm256_srli_epi32(v, 20);
        const __m256i d[8] = {_mm256_and_si256(v, m0), _mm256_and_si256(v, m1), _mm256_and_si256(v, m2), _mm256_and_si256(v, m3), _mm256_and_si256(v, m4), _mm256_and_si256(hi, m0), _mm256_and_si256(hi, m1), _mm256_and_si256(hi, m2)};
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(_mm256_castsi256_ps(d[i]), xb, a[i]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) tot = _mm256_add_ps(tot, a[i]);
    }
  return _mm256_cvtss_f32(tot);
}
int main() {
  const long K = 4096, W = 11008 / 8 / 2;  // one thread's half of N = 11008
  std::vector<std::vector<int32_t>> c(8, std::vector<int32_t>(K * W));
  for (auto& v : c) for (size_t i = 0; i < v.size(); ++i) v[i] = (int32_t)(i * 2654435761u);
  std::vector<float> x(K, 1e20f);
  for (int rep = 0; rep < 3; ++rep)
    for (int v = 0; v < 2; ++v) {
      const int it = 40;
      auto t0 = std::chrono::steady_clock::now();
      float s = 0;
      for (int i = 0; i < it; ++i) s += v ? run<true>(c[i % 8].data(), x.data(), K, W) : run<false>(c[i % 8].data(), x.data(), K, W);
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / it;
      std::printf("%s: %.0f us, %.1f GB/s (%g)\n", v ? "contiguous" : "strided  ", sec * 1e6, K * W * 4 / sec / 1e9, s);
    }
}
