# Sourced by the bench/*.sh scripts that run on the device machine (repo root, .deps carried):
# where the header dependencies are, where logs go ($OUT), the nvcc flags (sm_90a: the Hopper kernel is in the binary) and build-gpu/.
deps=${AWQ_DEPS:-.deps/include}
out=${OUT:-/tmp}
flags=(-std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Iinclude -Itests -Iexamples -I"$deps" -I"$deps/eigen3")
mkdir -p build-gpu
gpu_info() { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; }
# build_tool DIR: awq_llama_cuda into DIR — the tool's host code by g++, the job and the GPU
# generation on backend::cuda by nvcc (the translation units examples/CMakeLists.txt gives it).
build_tool() {
  local cxx=(-std=c++17 -O3 -DNDEBUG -Iinclude -Iexamples -I"$deps" -I"$deps/eigen3" -pthread)
  nvcc "${flags[@]}" -DNDEBUG -c examples/llama/job_cuda.cu -o "$1/job_cuda.o" &
  nvcc "${flags[@]}" -DNDEBUG -c examples/llama/generate_cuda.cu -o "$1/generate_cuda.o" &
  wait
  g++ "${cxx[@]}" examples/awq_llama.cpp examples/llama/job_cpu.cpp "$1/job_cuda.o" "$1/generate_cuda.o" \
    -L/usr/local/cuda/lib64 -lcublas -lcusolver -lcudart -o "$1/awq_llama_cuda"
}
