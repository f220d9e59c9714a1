#!/usr/bin/env bash
# The LTE router's CUDA kernels (kernels/cuda/cuda_lte_router*.cu: the fused forward / backward
# kernels and the per-tap form they fall back to, cuBLAS done by plain loops) on the CPU through
# emu.h (a fiber per CUDA thread, barriers for __syncthreads; cp.async copies landing only at
# the wait, NaN before, through cp_async_emu.h), against the CPU twins
# (kernels/cpu/op_lte_router.c): score, acts, dk, dv and each parameter group's gradient within
# 1e-5 relative error of the fp64 twin, the outputs within 1e-5 of the fp32 twin (test_cuda_ops'
# fp32 bound; router_emu.cpp). Then bf16 mode with HYLA_ROUTER_MMA=1: the fused kernels'
# products on the tensor cores (mma.sync and ldmatrix through mma_emu.h, the convs' and input
# gradients' operands rounded to tf32, the weight gradients' to bf16, fp32 sums) wherever the
# fused kernels run: every output and parameter group within 5e-3 of the fp64 twin (tiny groups:
# or twice what the form's operands alone give), within 2e-3 of an fp64 twin with the form's
# operands (printed), different from the fp32 results, the same bits twice
# (EMU_CXXFLAGS=-DEMU_TF32_AS_BF16: tf32 roundings keeping only bf16's bits: must fail). A check of the kernels' logic (halos, padding,
# dropout indices, fragment layouts, the partial-sum slots) where no GPU is at hand; not of their speed,
# and not a race detector. Where the CPU has FMA the emulation is built with contraction on, as
# nvcc builds the kernels. Needs build-cuda/ (or $BUILD) for the twin's objects.
#   bash tests/gpu/emu/run_router.sh [B L H d p kernels dilations sms fused]...
# EMU_WORKERS: OS threads running blocks (default 2); EMU_CXXFLAGS: extra compiler flags.
set -euo pipefail
. "$(dirname "$0")/emu_build.sh" # root, build, work (removed at exit), emu_compile
# cp.async copies landing only at the wait (cp_async_emu.h), the tensor-core fragments through
# mma_emu.h, the precision switch as router_emu.cpp's flag
python3 "$root/tests/gpu/emu/cuda_to_cpp.py" "$root/kernels/cuda" "$work" --cp-async \
  --replace '#include "cuda_mma.cuh"=>#include "mma_emu.h"' --replace "cuda_matmul_bf16()=>emu_router_bf16" \
  cuda_lte_router.cu cuda_lte_router_taps.cu cuda_lte_router_fused.cu cuda_lte_router_fixed.cu cuda_lte_router_fixed_bwd.cu cuda_lte_router_fixed.cuh cuda_lte_router_plan.cu cuda_lte_router.cuh \
  cuda_lte_router_plan.cuh cuda_column_sum.cuh
cp "$root/tests/gpu/emu/"{emu.h,emu_check.h,mma_emu.h,cp_async_emu.h,router_emu.cpp} "$work/"
emu_compile router_emu
cd "$work"
g++ -pthread router_emu.o "$build/CMakeFiles/hyla_cpu_ops_f32.dir/kernels/cpu/op_lte_router.c.o" \
  "$build/CMakeFiles/hyla_cpu_ops_f64.dir/kernels/cpu/op_lte_router.c.o" \
  "$build/libhyla_op_shapes.a" "$build/libhyla_common.a" -lopenblas -fopenmp -lm -o "$work/emu"
# Default shapes (B L H d p kernels dilations sms fused):
#   the 0.4B head (d 64, kernels 3,3,3, dilations 2,2,2) at L 300: several tiles both ways, and
#     (sms 16) the fixed-shape backward's segments of 2 tiles, three a row;
#     blocks of 2 backward tiles in 2 segments (sms 4: slots added to across tiles, reduced over
#     segments); p 0 at L 37, B 3 (one partial tile); L 5, shorter than the receptive field's
#     halo (12); test_cuda_ops' L 2;
#   kernels 5,3 / dilations 1,3 (n 2); even kernels 2,4,3,3 / dilations 1,2,1,3 (n 4, reaches
#     not centred, channels 48 .. 3 not multiples of 4 or 8), one block of 3 backward tiles;
#   head dims 8 (long forward tiles), 5 (channels 10, 5, 2, 1), 100 (200 .. 25), 128 with kernel
#     5 (weight chunks wider than 8 KB); a single conv;
#   shapes the fused kernels cannot take (the per-tap form runs): d 128 with a 9-tap dilation-8
#     second conv (no forward tile fits one 64-row pass), a single conv of dilation 110 (no
#     tile fits in shared memory either way; L below its reach).
# The tensor-core form runs on each of them wherever the fused kernels do: warp tiles 1x1 .. 4x2,
# one and two passes, n-tiles not filling the last warp column (d 100), channels not multiples
# of 16 (zero past them), k-steps past the channels, rows past the tile, slots of several tiles.
if [ $# -eq 0 ]; then
  set -- 2 300 2 64 0.1 3,3,3 2,2,2 4 1   2 300 2 64 0.1 3,3,3 2,2,2 16 1   3 37 2 64 0 3,3,3 2,2,2 2 1   1 5 3 64 0.1 3,3,3 2,2,2 2 1 \
         1 2 2 8 0.1 3,3,3 2,2,2 2 1   2 400 2 16 0.1 5,3 1,3 2 1   1 600 2 24 0.1 2,4,3,3 1,2,1,3 1 1 \
         2 300 3 8 0.1 3,3,3 2,2,2 2 1   2 50 2 5 0.1 3,3,3 2,2,2 2 1   1 150 1 100 0.1 3,3,3 2,2,2 1 1 \
         1 40 1 128 0.1 5,3 1,1 2 1   2 90 2 16 0.1 3 2 2 1 \
         1 100 1 128 0.1 3,9 1,8 2 bwd   1 40 1 128 0.1 3 110 2 0
fi
status=0 # every shape runs; any above the bound fails the script
while [ $# -ge 9 ]; do
  OMP_NUM_THREADS=1 "$work/emu" "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" || status=1
  shift 9
done
exit $status
