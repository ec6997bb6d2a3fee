# Call A: stash the first GGUF half, build awq_llama_cuda (main's tool) and the dumper.
# (bench/llmawq/gpu_a.sh, copied to .acc/a/run_a.sh by bench/llmawq/prepare.sh)
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
mkdir -p build-acc/deps && cp .acc/a/gguf.part00 build-acc/ && tar -C build-acc/deps -xJf .acc/a/deps.tar.xz
export AWQ_DEPS=build-acc/deps
source bench/gpu_env.sh
t0=$(date +%s)
cxx=(-std=c++17 -O3 -DNDEBUG -Iinclude -Iexamples -I"$deps" -I"$deps/eigen3" -pthread)
{ nvcc "${flags[@]}" -DNDEBUG -c examples/llama/gpu_block.cu -o build-acc/gpu_block.o &&
  g++ "${cxx[@]}" -DAWQ_LLAMA_CUDA=1 -I/usr/local/cuda/include examples/awq_llama.cpp build-acc/gpu_block.o \
    -L/usr/local/cuda/lib64 -lcublas -lcudart -o build-acc/awq_llama_cuda; } > $OUT/build_cuda.log 2>&1 &
g++ "${cxx[@]}" .acc/a/acc_dump.cpp -o build-acc/acc_dump > $OUT/build_dump.log 2>&1 &
wait
echo "build: $(( $(date +%s) - t0 )) s"; ls -la build-acc; tail -3 $OUT/build_*.log
git rev-parse HEAD
