#!/usr/bin/env bash
# The GDN's pieces, the embedding and the step's reductions / optimizer on the CPU through emu.h (a fiber per
# CUDA thread, barriers for __syncthreads; shuffles exchange through __syncwarp): every op that
# kernels/cuda/cuda_gdn_parts.cu (short convolution + SiLU, L2 norm, gates, gated RMSNorm, RoPE)
# and kernels/cuda/cuda_reduce_ops.cu (sum of squares, mean loss, accumulate_f64, clipping
# factor, axpy, AdamW) register, called through the table their cuda_register_* functions fill,
# against the fp32 CPU twins (kernels/cpu/op_gdn_parts.c, op_rope.c, op_optimizer.c) with
# test_cuda_ops' bounds (parts_emu.cpp). A check of the kernels' logic (2-D grids, warps per row,
# strides, reduction trees) where no GPU is at hand; not of their speed, and not a race
# detector. Where the CPU has FMA the emulation is built with contraction on, as nvcc builds the
# kernels. Needs build-cuda/ (or $BUILD) for the twins' objects.
#   bash tests/gpu/emu/run_parts.sh [GROUP ARGS...]...   (groups: parts_emu.cpp's usage)
# EMU_WORKERS: OS threads running blocks (default 2); EMU_CXXFLAGS: extra compiler flags.
set -euo pipefail
. "$(dirname "$0")/emu_build.sh" # root, build, work (removed at exit), emu_compile
# the table's type only (backend_cuda.h would bring cuBLAS); the ops' cuda_register_*
# functions fill it; CUDA's rsqrtf is within 2 ulp, 1 / sqrtf within 1 (the bound is 1e-5)
python3 "$root/tests/gpu/emu/cuda_to_cpp.py" "$root/kernels/cuda" "$work" --keep-register --replace '#include "backend_cuda.h"=>#include "kernels/backend.h"' \
  --replace '#include <cub/device/device_radix_sort.cuh>=>#include "cub_emu.h"' \
  --head '#include "emu.h"\nstatic inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }' \
  cuda_gdn_parts.cu cuda_reduce_ops.cu cuda_embedding.cu cuda_column_sum.cuh
cp "$root/tests/gpu/emu/"{emu.h,emu_check.h,cub_emu.h,parts_emu.cpp} "$work/"
emu_compile cuda_gdn_parts cuda_reduce_ops cuda_embedding parts_emu
cd "$work"
ops="$build/CMakeFiles/hyla_cpu_ops_f32.dir/kernels/cpu"
g++ -pthread *.o "$ops/op_gdn_parts.c.o" "$ops/op_rope.c.o" "$ops/op_optimizer.c.o" "$ops/op_embedding.c.o" "$build/libhyla_common.a" \
  -fopenmp -lm -o "$work/emu"
# Default groups (parts_emu.cpp): the convolution with C 70 (one partial channel block) and 600
#   (three blocks, the last partial) at B 2-3, L 37-50 >= kw (sequence starts inside a block of
#   rows; B L 150 > 128: two column-sum chunks for dw), kw 2 and 8 (the CPU's widest), L 3 < kw;
#   the embedding (cuda_embedding.cu; CUB's sort is a stable sort, cub_emu.h) with few repeats
#   (vocab 1000), runs of ~140 (vocab 5, padding row 0: runs cross chunks of 64, one chunk
#   inside a run), runs of ~1365 over n 4096, and one token only (every chunk one run's piece,
#   all of it padding); the L2 norm and the gated RMSNorm (a warp per row, 8 rows a block) at rows 37 and 131 (last
#   block partial) and dims 13 (idle lanes), 70, 128, 130 (not multiples of 32, or exactly 4);
#   gates at rows 37 / 131 (a-logits up to 30: softplus's linear branch); RoPE with pos0, d 16,
#   128, 100 (50 pairs: 5 rows a block, 6 threads idle) and 600 (300 pairs: a row is a block of
#   320 threads); the mean loss at n 37 and 5000 (> 1024 threads: the stride), 0 valid rows too;
#   the optimizer chain at count 100003, and 5000011: 1221 partial sums, more than the reducing
#   block's 256 threads.
every=""
if [ $# -eq 0 ]; then
  every="--every-op" # the default list must call every op the two files register
  set -- conv 2 37 70 4  conv 3 50 600 4  conv 2 40 300 2  conv 2 20 33 8  conv 2 3 70 4 \
         l2norm 37 130  l2norm 131 70  l2norm 131 128  l2norm 37 13 \
         gated_rmsnorm 37 13  gated_rmsnorm 37 130  gated_rmsnorm 131 70  gated_rmsnorm 131 128 \
         gates 37 5  gates 131 16  rope 2 37 3 16 5  rope 1 70 2 128 0  rope 1 9 3 100 2  rope 1 5 2 600 1 \
         embedding 37 70 1000 0  embedding 700 300 5 1  embedding 4096 33 3 0  embedding 640 20 1 1 \
         loss 37  loss 5000  optimizer 100003  optimizer 5000011
fi
OMP_NUM_THREADS=1 "$work/emu" $every "$@"
