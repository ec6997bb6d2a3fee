// The second translation unit of the tiled W4A16 kernels (w4a16_second_tu.hpp; the tests are in
// test_cuda_w4a16.cu).
#include "w4a16_second_tu.hpp"

namespace awq_test {

WgmmaKernelRef second_tu_wgmma_kernel(int form, bool bf16) {
  return bf16 ? wgmma_kernel_of_this_tu<__nv_bfloat16>(form) : wgmma_kernel_of_this_tu<__half>(form);
}
void second_tu_matmul(const awq::cuda::W4A16TiledArgs& a) { awq::cuda::w4a16_matmul(a); }
void second_tu_matmul(const awq::cuda::W4A16TiledArgsBf16& a) { awq::cuda::w4a16_matmul(a); }

}  // namespace awq_test
