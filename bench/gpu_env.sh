# Sourced by the bench/*.sh scripts that run on the device machine (repo root, .deps carried):
# where the header dependencies are, where logs go ($OUT), the nvcc flags (sm_90a: the Hopper kernel is in the binary) and build-gpu/.
deps=${AWQ_DEPS:-.deps/include}
out=${OUT:-/tmp}
flags=(-std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Iinclude -Itests -Iexamples -I"$deps" -I"$deps/eigen3")
mkdir -p build-gpu
gpu_info() { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; }
