#!/usr/bin/env bash
# NSA's tiled fp32 CUDA kernels (kernels/cuda/cuda_nsa*.cu as HYLA_NSA_TILED=1 runs them, the
# window branch through cuda_flash_attention.cu's fp32 tiles) on the CPU through emu.h (a
# fiber per CUDA thread, barriers for __syncthreads / __syncwarp / shuffles / ballots),
# against the fp32 CPU twin (kernels/cpu/op_nsa.c): o, saved and block_idx (identical), dq, dk,
# dv, dgate_logits, relative error within 1e-5 (test_cuda_ops' fp32 bound). A check of the
# kernels' logic (indices, masks, barriers, layouts) where no GPU is at hand; not of their
# speed, and not a race detector. Then bf16 mode (EMU_NSA_BF16=1): the tensor-core tiles
# (cuda_nsa_mma.cu, cuda_nsa_keys.cu's dkdv_mma_kernel) through mma_emu.h, their cp.async
# copies through cp_async_emu.h (a copy lands at its wait; read before it, it is NaN), within
# test_cuda_ops' bf16 bound 1e-2 (the window branch stays on the fp32 tiles). Where the CPU has FMA the emulation is built with contraction on, as nvcc
# builds the kernels, so the selection's exactness (__f*_rn) is checked too.
# Needs build-cuda/ (or $BUILD) for the twin's objects.
#   [EMU_NSA_BF16=1] bash tests/gpu/emu/run_nsa.sh [B L Hq Hkv d block n_select window]...
# EMU_WORKERS: OS threads running blocks (default 2); EMU_CXXFLAGS: extra compiler flags.
set -euo pipefail
. "$(dirname "$0")/emu_build.sh" # root, build, work (removed at exit), emu_compile
python3 "$root/tests/gpu/emu/cuda_to_cpp.py" "$root/kernels/cuda" "$work" --cp-async \
  --replace '#include "cuda_mma.cuh"=>#include "mma_emu.h"' --replace "cuda_matmul_bf16()=>emu_nsa_bf16" \
  --head '#include "emu.h"\n#include "mma_emu.h"\n#include "cp_async_emu.h"\nextern bool emu_nsa_bf16;' \
  cuda_nsa.cu cuda_nsa_select.cu cuda_nsa_compressed.cu cuda_nsa_query.cu cuda_nsa_keys.cu cuda_nsa_mma.cu \
  cuda_nsa_mma.cuh cuda_flash_attention.cu cuda_bf16_convert.cu cuda_bf16_convert.cuh cuda_bf16_operand.cuh \
  cuda_bf16_twins.cu
cp "$root/tests/gpu/emu/"{emu.h,emu_check.h,mma_emu.h,cp_async_emu.h,nsa_emu.cpp} "$work/"
emu_compile cuda_nsa_select cuda_nsa_compressed cuda_nsa_query cuda_nsa_keys cuda_nsa_mma cuda_flash_attention \
  cuda_bf16_convert cuda_bf16_twins nsa_emu
cd "$work"
g++ -pthread *.o "$build/CMakeFiles/hyla_cpu_ops_f32.dir/kernels/cpu/op_nsa.c.o" "$build/libhyla_op_shapes.a" \
  "$build/libhyla_common.a" -fopenmp -lm -o "$work/emu"
# Default shapes: GQA groups of 2 and 16 and MHA-like, partial last blocks, several query and key
# tiles; L 300 with a group of 20 cuts block 0's 6000 query rows into two work items
# (SEG_ROWS 4096) and the heads into two query tiles, block 80 into two 64-key parts, head dim
# 5 pads the tiles; head dims 40 and 100 take the 64- and 128-wide tiles; n_select 0, window 1;
# 75 pooled blocks (L 600, block 8; L 300, block 4) take cuda_nsa_compressed.cu's kernel through
# two chunks of 64, with 8 positions (group 16) and 4 (group 32) a block.
# EMU_NSA_FULL=1 runs test_cuda_ops' fp32 NSA shapes instead (all but the 0.4B layout; ~30 s).
if [ $# -eq 0 ] && [ "${EMU_NSA_FULL:-0}" = 1 ]; then
  set -- 2 40 4 2 8 4 4 5  1 130 8 2 64 16 4 32  1 300 2 2 64 64 3 100  1 130 16 2 64 64 1 512 \
         1 300 4 1 32 128 2 64  1 200 32 1 16 32 4 50  2 1000 16 1 8 32 16 20  1 1000 16 1 64 16 16 40
fi
bf16_shapes=""
if [ $# -eq 0 ]; then
  set -- 1 40 4 2 8 4 4 5  1 130 8 2 16 16 4 32  2 70 16 1 8 32 3 20  1 300 20 1 5 80 2 70 \
         1 90 4 2 40 16 4 40  1 70 2 1 100 8 5 30  1 50 4 2 12 8 0 1  1 600 16 2 64 8 4 32  1 300 32 1 16 4 4 20
  # bf16 mode: test_cuda_ops' bf16 shapes (block 128: two 64-key tiles a selected block; head
  # dim 128; block 32, group 32: two head chunks) and a GQA group of 16 at block 64
  [ "${EMU_NSA_BF16:-}" = "" ] && bf16_shapes="1 300 8 2 64 64 4 100  1 400 16 2 64 128 2 64  1 200 4 1 128 64 3 70 \
    1 250 32 2 64 32 8 60"
fi
# Each shape twice: the compressed branch and the importances in cuda_nsa_compressed.cu's kernel
# (the default) and in cuda_nsa_select.cu's two (HYLA_NSA_COMPRESSED=0): the same arithmetic, so
# every output (o, saved, block_idx, dq, dk, dv, dgate_logits) must be the same bits.
status=0 # every shape runs; any above the bound, or any bit apart between the forms, fails the script
run_shapes() { # (EMU_NSA_BF16 from the environment) B L Hq Hkv d block n_select window ...
  while [ $# -ge 8 ]; do
    for form in 1 0; do
      HYLA_NSA_COMPRESSED=$form EMU_NSA_DUMP="$work/fwd-$form" OMP_NUM_THREADS=1 "$work/emu" "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" ||
        status=1
    done
    if cmp -s "$work/fwd-1" "$work/fwd-0"; then echo "  the two forms of the compressed branch: the same bits"
    else echo "  FAIL: the two forms of the compressed branch differ"; status=1; fi
    rm -f "$work/fwd-1" "$work/fwd-0"
    shift 8
  done
}
run_shapes "$@"
[ -n "$bf16_shapes" ] && EMU_NSA_BF16=1 run_shapes $bf16_shapes
exit $status
