// The CUDA test sources as one translation unit. They instantiate the same drivers, searches,
// Eigen reference paths and kernels, which are most of each file's compile; together those are
// compiled once. test_cuda_main.cu (the runner) and test_cuda_w4a16_tu.cu (a second translation
// unit on purpose) stay separate.
#include "test_cuda_quantize.cu"
#include "test_cuda_w4a16.cu"
#include "test_cuda_search.cu"
#include "test_cuda_model.cu"
#include "test_cuda_generate.cu"
#include "test_cuda_gptq.cu"
