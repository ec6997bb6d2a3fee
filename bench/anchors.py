#!/usr/bin/env python3
"""Issue #25's anchors on the device: Marlin (IST-DASLab/marlin, symmetric g128) and llm-awq's W4A16
GEMM and GEMV (mit-han-lab/llm-awq, awq/kernels/csrc/quantization_new, g128), built from their own
sources with PyTorch's extension builder and timed the way bench/bench_w4a16.cu times ours: 7 repeats
of 200 calls, the median, weight copies rotated (>= 256 MB of each) so L2 never holds the weights.

The 200 calls are captured in one CUDA graph and replayed (a Python loop would time the interpreter,
not the kernel). Capture needs the calls on the current stream, so llm-awq's host code is changed
in two ways in a copy (MODS below): its launches name the current stream instead of the legacy
default one, and its split-K semaphores come from one zeroed buffer kept between calls instead of
an uninitialized tensor per call (its last split leaves them at zero). The kernels are untouched.

usage: python3 bench/anchors.py marlin|awq SOURCE_DIR [M ...]
  marlin: SOURCE_DIR holds marlin_cuda.cpp and marlin_cuda_kernel.cu (built with Marlin's own flags,
  none beyond PyTorch's); awq: SOURCE_DIR is llm-awq's quantization_new folder (gemm/, gemv/,
  dequantize.cuh, dispatch_utils.cuh; built with llm-awq's setup.py flags). One anchor a process: a
  kernel fault leaves the CUDA context unusable. Prints one row per (M, K, N) in µs.
"""
import os
import re
import shutil
import statistics
import sys
import tempfile

import torch
from torch.utils.cpp_extension import load

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672)]  # (K, N), bench_w4a16's
GROUP = 128
# llm-awq's own nvcc flags (awq/kernels/setup.py); the architecture comes from TORCH_CUDA_ARCH_LIST.
NVCC = ["-O3", "-std=c++17", "-DENABLE_BF16", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_BFLOAT162_OPERATORS__",
        "-U__CUDA_NO_BFLOAT162_CONVERSIONS__", "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math"]
GLUE = """#include <torch/extension.h>
torch::Tensor gemm_forward_cuda_new(torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor);
torch::Tensor gemv_forward_cuda_new(torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, int, int, int, int);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemm", &gemm_forward_cuda_new);
  m.def("gemv", &gemv_forward_cuda_new);
}
"""
MARLIN_GLUE = """#include <torch/extension.h>
void mul(const torch::Tensor&, const torch::Tensor&, torch::Tensor&, const torch::Tensor&, torch::Tensor&, int, int, int, int);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("mul", &mul); }
"""
# (pattern, replacement) applied to llm-awq's gemm_cuda.cu and gemv_cuda.cu; each must match somewhere.
MODS = [
    (r"<<<num_blocks, threads_per_block, kSmemByteSize>>>", "<<<num_blocks, threads_per_block, kSmemByteSize, at::cuda::getCurrentCUDAStream()>>>"),
    (r"<<<num_blocks, num_threads>>>", "<<<num_blocks, num_threads, 0, at::cuda::getCurrentCUDAStream()>>>"),
    (r"torch::Tensor _semaphores = torch::empty\(\{num_mn_tiles\}, options_int\);",
     "static torch::Tensor _semaphores = torch::zeros({1 << 16}, options_int);"),
]


def prepare_marlin(marlin_dir, work):
    """A copy of Marlin's sources with the glue; returns the source list."""
    m = os.path.join(work, "marlin")
    os.makedirs(m)
    shutil.copy(os.path.join(marlin_dir, "marlin_cuda_kernel.cu"), m)
    # marlin_cuda.cpp's own PYBIND11_MODULE is dropped: the glue names only mul.
    src = open(os.path.join(marlin_dir, "marlin_cuda.cpp")).read()
    src = src[: src.index("PYBIND11_MODULE")]
    open(os.path.join(m, "marlin_cuda.cpp"), "w").write(src)
    open(os.path.join(m, "glue.cpp"), "w").write(MARLIN_GLUE)
    return [os.path.join(m, f) for f in ("glue.cpp", "marlin_cuda.cpp", "marlin_cuda_kernel.cu")]


def prepare_awq(awq_dir, work):
    """A copy of llm-awq's sources with the glue and MODS; returns the source list."""
    a = os.path.join(work, "awq")
    shutil.copytree(awq_dir, a)
    done = {p: 0 for p, _ in MODS}
    for f in ("gemm/gemm_cuda.cu", "gemv/gemv_cuda.cu"):
        path = os.path.join(a, f)
        s = "#include <ATen/cuda/CUDAContext.h>\n" + open(path).read()
        for p, r in MODS:
            s, n = re.subn(p, r, s)
            done[p] += n
        open(path, "w").write(s)
    missing = [p for p, n in done.items() if n == 0]
    if missing:
        sys.exit(f"anchors: llm-awq's sources changed, no match for {missing}")
    open(os.path.join(a, "glue.cpp"), "w").write(GLUE)
    return [os.path.join(a, f) for f in ("glue.cpp", "gemm/gemm_cuda.cu", "gemv/gemv_cuda.cu")]


def build(name, sources, work, cuda_flags, c_flags):
    d = os.path.join(work, "build_" + name)
    os.makedirs(d, exist_ok=True)
    return load(name=name, sources=sources, extra_cuda_cflags=cuda_flags, extra_cflags=c_flags, build_directory=d, verbose=False)


def time_us(call, calls=200, reps=7):
    """Median µs per call of `calls` calls (call(i) uses weight copy i), captured once, replayed."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(3):
            call(i)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            call(i)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(reps):
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        out.append(1000.0 * a.elapsed_time(b) / calls)
    return statistics.median(out)


def copies(nbytes):
    return max(2, (256 << 20) // nbytes + 1)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    which = sys.argv[1]
    if which not in ("marlin", "awq"):
        sys.exit(__doc__)
    ms = [int(v) for v in sys.argv[3:]] or [1, 16, 32, 64, 128, 256]
    work = tempfile.mkdtemp(prefix="anchors_")
    os.environ.setdefault("MAX_JOBS", "16")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    if which == "marlin":
        ext = build("marlin_anchor", prepare_marlin(sys.argv[2], work), work, [], [])
    else:
        ext = build("awq_anchor", prepare_awq(sys.argv[2], work), work, NVCC, ["-O3", "-std=c++17", "-DENABLE_BF16"])
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; anchor {which}")
    print(f"{'M':>5} {'K':>6} {'N':>6} " + (f"{'marlin_us':>10}" if which == "marlin" else f"{'awq_gemm_us':>12} {'awq_gemv_us':>12}"))
    torch.manual_seed(0)
    for m in ms:
        for k, n in SHAPES:
            x = (torch.randn(m, k, device=dev) * 0.1).half()
            groups = k // GROUP
            if which == "marlin":
                print(f"{m:5d} {k:6d} {n:6d} {time_marlin(ext, x, m, k, n, groups, dev):10.1f}", flush=True)
            else:
                t_gemm, t_gemv = time_awq(ext, x, m, k, n, groups, dev)
                print(f"{m:5d} {k:6d} {n:6d} {t_gemm:12.1f} {t_gemv:12.1f}", flush=True)
            torch.cuda.empty_cache()


def time_marlin(marlin, x, m, k, n, groups, dev):
    # Marlin: B int32 [K/16, 2N] (its tiled 4-bit layout), s fp16 [K/128, N], workspace zeroed.
    cm = copies(k * n // 2 + groups * n * 2)
    mb = [torch.randint(-2**31, 2**31 - 1, (k // 16, n * 16 // 8), dtype=torch.int32, device=dev) for _ in range(cm)]
    ms_ = [(torch.rand(groups, n, device=dev) * 0.01 + 0.001).half() for _ in range(cm)]
    ws = torch.zeros(n // 128 * 16, dtype=torch.int32, device=dev)
    c = torch.empty(m, n, dtype=torch.half, device=dev)
    return time_us(lambda i: marlin.mul(x, mb[i % cm], c, ms_[i % cm], ws, -1, -1, -1, 8))


def time_awq(awq, x, m, k, n, groups, dev):
    # llm-awq: qweight int16 [N/4, K], scales and scaled zeros fp16 [groups padded to 8, N].
    zrows = (groups + 7) // 8 * 8
    ca = copies(k * n // 2 + 2 * zrows * n * 2)
    qw = [torch.randint(-2**15, 2**15 - 1, (n // 4, k), dtype=torch.int16, device=dev) for _ in range(ca)]
    sc = [(torch.rand(zrows, n, device=dev) * 0.01 + 0.001).half() for _ in range(ca)]
    zs = [(-torch.rand(zrows, n, device=dev) * 0.08).half() for _ in range(ca)]
    t_gemm = time_us(lambda i: awq.gemm(x, qw[i % ca], sc[i % ca], zs[i % ca]))
    t_gemv = time_us(lambda i: awq.gemv(x, qw[i % ca], sc[i % ca], zs[i % ca], m, n, k, GROUP)) if m < 8 else float("nan")
    return t_gemm, t_gemv


if __name__ == "__main__":
    main()
