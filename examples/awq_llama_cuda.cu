// awq_llama with the search on the GPU (--backend cuda): the same program, built by nvcc.
#define AWQ_LLAMA_CUDA 1
#include "awq_llama.cpp"
