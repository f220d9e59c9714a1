#!/usr/bin/env bash
# The GDN's pieces, RMSNorm, the embedding and the step's reductions / optimizer on the CPU
# through emu.h (a fiber per CUDA thread, barriers for __syncthreads; shuffles exchange through
# __syncwarp): every op that kernels/cuda/cuda_gdn_parts.cu (short convolution + SiLU, L2 norm,
# gates, gated RMSNorm, RoPE), cuda_rmsnorm.cu (RMSNorm, add + RMSNorm), cuda_embedding.cu and
# cuda_reduce_ops.cu (sum of squares, mean loss, accumulate_f64, clipping factor, axpy, AdamW)
# register, called through the table their cuda_register_* functions fill, against the fp32 CPU
# twins (kernels/cpu/op_gdn_parts.c, op_norm.c, op_rope.c, op_embedding.c, op_optimizer.c) with
# test_cuda_ops' bounds (parts_emu.cpp). A check of the kernels' logic (2-D grids, warps and row
# groups per row, float4 and scalar paths, strides, reduction trees) where no GPU is at hand;
# not of their speed, and not a race detector. Where the CPU has FMA the emulation is built
# with contraction on, as nvcc builds the kernels. Needs build-cuda/ (or $BUILD) for the twins'
# objects.
#   bash tests/gpu/emu/run_parts.sh [GROUP ARGS...]...   (groups: parts_emu.cpp's usage)
# EMU_WORKERS: OS threads running blocks (default 2); EMU_CXXFLAGS: extra compiler flags.
set -euo pipefail
. "$(dirname "$0")/emu_build.sh" # root, build, work (removed at exit), emu_compile
# the table's type only (backend_cuda.h would bring cuBLAS); the ops' cuda_register_*
# functions fill it; CUDA's rsqrtf is within 2 ulp, 1 / sqrtf within 1 (the bound is 1e-5)
python3 "$root/tests/gpu/emu/cuda_to_cpp.py" "$root/kernels/cuda" "$work" --keep-register --replace '#include "backend_cuda.h"=>#include "kernels/backend.h"' \
  --replace '#include <cub/device/device_radix_sort.cuh>=>#include "cub_emu.h"' \
  --head '#include "emu.h"\nstatic inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }' \
  cuda_gdn_parts.cu cuda_rmsnorm.cu cuda_reduce_ops.cu cuda_embedding.cu cuda_bf16_convert.cu cuda_swiglu.cu \
  cuda_column_sum.cuh cuda_reduce.cuh cuda_vec.cuh cuda_bf16_convert.cuh cuda_swiglu.cuh
cp "$root/tests/gpu/emu/"{emu.h,emu_check.h,cub_emu.h,parts_emu.cpp} "$work/"
emu_compile cuda_gdn_parts cuda_rmsnorm cuda_reduce_ops cuda_embedding cuda_bf16_convert cuda_swiglu parts_emu
cd "$work"
ops="$build/CMakeFiles/hyla_cpu_ops_f32.dir/kernels/cpu"
g++ -pthread *.o "$ops/op_gdn_parts.c.o" "$ops/op_norm.c.o" "$ops/op_rope.c.o" "$ops/op_optimizer.c.o" "$ops/op_linear.c.o" \
  "$ops/op_embedding.c.o" "$build/libhyla_common.a" -lopenblas -fopenmp -lm -o "$work/emu"
# Default groups (parts_emu.cpp): the convolution (a thread slides over a run of 16 tokens) with
#   C 70 and 33 (scalar: one partial block of channels, several runs a block), 600 and 1024
#   (float4; 1024: the 0.4B width, a block of 256 channel quads), 300 and 64 (float4, several
#   runs a block) at B 1-3, L 37-50 >= kw (runs end inside a sequence; B L 150 > 128: two
#   column-sum chunks for dw), kw 2, 3, 4 (taps bound 4), 6 and 8 (bound 8, float4 and scalar),
#   L 3 < kw; RMSNorm and add + RMSNorm (row groups of 32 to 256 threads) at dim 1024 (float4,
#   64 threads a row, 4 rows a block, the last block partial), 1000 and 2048 (float4, 64 / 128
#   threads), 70, 3 and 6 (scalar, a warp), 5000 (float4, 256 threads, 5 of 8 units a thread),
#   5001 (scalar, too wide: a block per row), each also from a misaligned x (scalar) and the
#   fused backward with dx over dsum; the embedding (cuda_embedding.cu; CUB's sort is a stable
#   sort, cub_emu.h) with few repeats (vocab 1000), runs of ~140 (vocab 5, padding row 0: runs
#   cross chunks of 64, one chunk inside a run), runs of ~1365 over n 4096, and one token only
#   (every chunk one run's piece, all of it padding); the L2 norm and the gated RMSNorm (a warp
#   per row, 8 rows a block) at rows 37 and 131 (last block partial) and dims 13 (idle lanes),
#   70, 128, 130 (not multiples of 32, or exactly 4); the gated RMSNorm's rows in registers also
#   at 600 (float4, 5 of 8 units a lane) and too wide at 2000 (float4) and 1001 (scalar); gates
#   at rows 37 / 131 (a-logits up to 30: softplus's linear branch); RoPE (a thread: W pairs in up
#   to 4 heads) with pos0, d 16, 128, 64 with 16 heads (the 0.4B layout: 4 head groups), 2000
#   (float4, 250 threads a token), 100 and 6 (scalar; 5 heads: a partial head group), 600 (75
#   float4 pairs); the mean loss at n 37 and 5000 (> 1024 threads: the stride), 0 valid rows too;
#   the optimizer chain at count 100003, and 5000011: 1221 partial sums, more than the reducing
#   block's 256 threads; bf16 rounding and widening (cuda_bf16_convert.cu: 8 values a thread where
#   aligned, one elsewhere) at count 1003 aligned (a tail of 3) and 1003 / 16 one float off
#   (the scalar path only); SwiGLU (cuda_swiglu.cu: 4 values a thread where aligned) at count
#   1000 aligned and one float off, 1003 (not a multiple of 4), fp32 and bf16 outputs; the
#   convolution with the L2 norm over heads in one op (conv_l2norm): heads of 128 (the fused
#   kernel: C 1024 with 4 blocks of runs a sequence ending mid-run, 256 with 4 runs a block, 384
#   with kw 6 past the 4-tap bound) and of 64 (the two kernels).
# Then the convolution, RMSNorm and gated RMSNorm groups again with HYLA_NORM_FUSED_DW the other
# way (weight gradients summed in the backward row kernels, or by a separate column sum), with
# shapes for the fused sums: several partial rows (conv B 2 L 300 C 1024 float4 and B 3 L 200
# C 70 scalar, two channel blocks; RMSNorm n 301 dim 1024, the last grid step partial, and its
# backward from a misaligned dy: the scalar path, a 256-thread group a row; gated rows 1000 of
# 128), and fewer rows than a block's row groups or warps (RMSNorm n 3, gated rows 5).
every=""
# the groups whose backward passes HYLA_NORM_FUSED_DW changes (cuda_column_sum.cuh), then the rest
dw_groups="conv 2 37 70 4  conv 3 50 600 4  conv 2 40 300 2  conv 2 20 33 8  conv 2 3 70 4  conv 2 37 1024 4 \
  conv 1 40 64 3  conv 2 19 36 6  conv 1 300 5 3  conv 2 300 1024 4  conv 3 200 70 4 \
  rmsnorm 37 1024  rmsnorm 37 1000  rmsnorm 13 2048  rmsnorm 131 70  rmsnorm 37 3  rmsnorm 9 6 \
  rmsnorm 9 5000  rmsnorm 5 5001  rmsnorm 301 1024  rmsnorm 3 1024 \
  gated_rmsnorm 37 13  gated_rmsnorm 37 130  gated_rmsnorm 131 70  gated_rmsnorm 131 128 \
  gated_rmsnorm 9 600  gated_rmsnorm 5 2000  gated_rmsnorm 5 1001  gated_rmsnorm 1000 128  gated_rmsnorm 5 128"
if [ $# -eq 0 ]; then
  every="--every-op" # the default list must call every op the files register
  set -- $dw_groups \
         l2norm 37 130  l2norm 131 70  l2norm 131 128  l2norm 37 13 \
         conv_l2norm 2 37 1024 4 128  conv_l2norm 1 40 256 3 128  conv_l2norm 2 19 384 6 128  conv_l2norm 2 20 192 4 64 \
         gates 37 5  gates 131 16  rope 2 37 3 16 5  rope 1 70 2 128 0  rope 1 9 3 100 2  rope 1 5 2 600 1 \
         rope 1 7 16 64 3  rope 1 5 5 6 0  rope 1 3 2 2000 4 \
         embedding 37 70 1000 0  embedding 700 300 5 1  embedding 4096 33 3 0  embedding 640 20 1 1 \
         loss 37  loss 5000  optimizer 100003  optimizer 5000011  bf16 1003 0  bf16 1003 1  bf16 16 1 \
         swiglu 1000 0  swiglu 1000 1  swiglu 1003 0
fi
# (the fused convolution + L2 norm kernel, off by default until its GPU run: on here)
HYLA_CONV_L2NORM=${HYLA_CONV_L2NORM:-1} OMP_NUM_THREADS=1 "$work/emu" $every "$@" | tee "$work/out"
# The default list's dw groups again with HYLA_NORM_FUSED_DW the other way (the first line of
# the run above says which way it went): both backward forms are checked.
if [ -n "$every" ]; then
  if grep -q "^fused dw.*: on" "$work/out"; then other=0; else other=1; fi
  HYLA_NORM_FUSED_DW=$other OMP_NUM_THREADS=1 "$work/emu" $dw_groups
fi
