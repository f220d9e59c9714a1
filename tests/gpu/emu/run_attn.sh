#!/usr/bin/env bash
# The tiled attention kernels (kernels/cuda/cuda_flash_attention.cu, and its bf16 tensor-core
# kernels cuda_flash_attention_bf16.cu, which cuda_matmul_bf16() selects for head dims 64 and
# 128) on the CPU through emu.h (a fiber per CUDA thread, barriers for __syncthreads /
# __syncwarp / shuffles; WMMA tiles, and mma.sync / ldmatrix on register fragments through
# mma_emu.h, on bf16-rounded values with fp32 sums; cp.async copies landing only at the wait,
# NaN before, through cp_async_emu.h), against the fp32 CPU twin
# (kernels/cpu/op_attention.c): o, lse, dq, dk, dv within 1e-2 relative error (test_cuda_ops'
# bf16 bound; attn_emu.cpp). A check of the kernels' logic (indices, masks, fragment layouts,
# cp.async waits) where no GPU is at hand; not of their speed, and not a race detector.
# Needs build-cuda/ (or $BUILD) for the twin's object.
#   bash tests/gpu/emu/run_attn.sh [B L Hq Hkv d wl density]...   (wl < 0: causal; density > 0: LTE)
# EMU_ATTN_FP32=1: the fp32 tiles instead (bound 1e-5). EMU_WORKERS: OS threads running blocks
# (default 2); EMU_CXXFLAGS: extra compiler flags.
set -euo pipefail
. "$(dirname "$0")/emu_build.sh" # root, build, work (removed at exit), emu_compile
# the tensor-core fragments through mma_emu.h, the precision switch as attn_emu.cpp's flag
# (bf16 unless EMU_ATTN_FP32=1), cp.async copies landing only at the wait (cp_async_emu.h)
python3 "$root/tests/gpu/emu/cuda_to_cpp.py" "$root/kernels/cuda" "$work" --cp-async --keep-register --replace '#include "cuda_mma.cuh"=>#include "mma_emu.h"' \
  --replace "cuda_matmul_bf16()=>emu_attn_bf16" \
  --replace '#include "backend_cuda.h"=>#include "kernels/backend.h"' \
  --head '#include "emu.h"\n#include "mma_emu.h"\n#include "cp_async_emu.h"\nextern bool emu_attn_bf16;' \
  cuda_flash_attention.cu cuda_flash_attention_bf16.cu cuda_bf16_convert.cu cuda_bf16_convert.cuh cuda_bf16_operand.cuh cuda_bf16_twins.cu
cp "$root/tests/gpu/emu/"{emu.h,emu_check.h,mma_emu.h,cp_async_emu.h,attn_emu.cpp} "$work/"
emu_compile cuda_flash_attention cuda_flash_attention_bf16 cuda_bf16_convert cuda_bf16_twins attn_emu
cd "$work"
g++ -pthread *.o "$build/CMakeFiles/hyla_cpu_ops_f32.dir/kernels/cpu/op_attention.c.o" -fopenmp -lm -o "$work/emu"
# Default shapes (B L Hq Hkv d wl density): causal at L 37 / 257 (partial tiles), d 64 and 128;
# sliding windows 100 and 20 (key tiles starting mid-window), 63 at L 192 (whole tiles); GQA
# groups of 2 and 8; LTE (window plus random selected older keys: segment B, the second dk/dv
# pass) at d 64 and 128, B = 2 (per-(batch, kv head) lists), a window of 0 (only the query
# itself) with a dense selection, and a window longer than L (no segment B); lists of several
# dk / dv key blocks (~360 entries at d 64: three of HYLA_ATTN_DKDV2's 128, the last partial;
# ~280 at d 128: five of 64).
if [ $# -eq 0 ]; then
  set -- 1 37 2 1 64 -1 0  1 257 2 2 64 -1 0  1 130 4 2 128 -1 0  2 200 2 1 64 100 0 \
         1 257 4 2 128 100 0  1 150 8 1 64 20 0  1 192 2 1 64 63 0  2 300 4 2 64 70 0.3 \
         1 130 4 2 128 16 0.5  1 100 2 1 64 0 0.9  1 65 2 2 64 200 0.5  1 600 2 1 64 100 0.6 \
         1 400 2 2 128 50 0.7
fi
status=0 # every shape runs; any above the bound fails the script
# In bf16 each shape runs four times: as the environment says (the defaults: two m-tiles of
# 16 rows per warp at head dim 64 in the forward and dq kernels, mma_dkdv2_kernel for dk / dv,
# dq 32 keys at a time, q, k, v held in bf16); with HYLA_ATTN_TWO_MTILES flipped (within the
# bound: with windows, 128-query blocks start their key tiles elsewhere, so P V sums in other
# groups); with HYLA_ATTN_LAZY_RESCALE flipped (within the bound: another reference maximum,
# other roundings); with HYLA_ATTN_DKDV2, HYLA_ATTN_DQ2 and HYLA_HOLD_COPIES flipped, whose outputs must
# be the first run's bits (dk / dv laid out in other blocks, dq 64 keys at a time: every sum in
# the same order; q, k, v rounded by the op: the same roundings). o is held after the forward
# pass, its copy written by the forward kernel (HYLA_COPIES_AT_SOURCE, on here unless the
# environment says 0; attn_emu.cpp checks the copy against o, and that the kernel wrote it),
# in the other run off with the holds.
export HYLA_COPIES_AT_SOURCE=${HYLA_COPIES_AT_SOURCE:-1}
two=$(( ${HYLA_ATTN_TWO_MTILES:-1} == 0 )) dkdv2=$(( ${HYLA_ATTN_DKDV2:-1} == 0 )) dq2=$(( ${HYLA_ATTN_DQ2:-1} == 0 )) hold=$(( ${HYLA_HOLD_COPIES:-1} == 0 ))
lazy=$(( ${HYLA_ATTN_LAZY_RESCALE:-0} == 0 )) # the forward's lazy rescaling flipped: within the bound
src=$(( HYLA_COPIES_AT_SOURCE == 0 ))
while [ $# -ge 7 ]; do
  EMU_ATTN_DUMP="$work/first.bin" OMP_NUM_THREADS=1 "$work/emu" "$1" "$2" "$3" "$4" "$5" "$6" "$7" || status=1
  if [ "${EMU_ATTN_FP32:-0}" != 1 ]; then
    if [ "$5" = 64 ]; then
      out=$(HYLA_ATTN_TWO_MTILES=$two OMP_NUM_THREADS=1 "$work/emu" "$1" "$2" "$3" "$4" "$5" "$6" "$7" 2>&1) || status=1
      printf '%s\n' "$out" | sed "s/^/two m-tiles $two: /"
    fi
    out=$(HYLA_ATTN_LAZY_RESCALE=$lazy OMP_NUM_THREADS=1 "$work/emu" "$1" "$2" "$3" "$4" "$5" "$6" "$7" 2>&1) || status=1
    printf '%s\n' "$out" | sed "s/^/lazy rescale $lazy: /"
    out=$(EMU_ATTN_DUMP="$work/other.bin" HYLA_ATTN_DKDV2=$dkdv2 HYLA_ATTN_DQ2=$dq2 HYLA_HOLD_COPIES=$hold \
            HYLA_COPIES_AT_SOURCE=$src OMP_NUM_THREADS=1 "$work/emu" "$1" "$2" "$3" "$4" "$5" "$6" "$7" 2>&1) || status=1
    printf '%s\n' "$out" | sed "s/^/dkdv2 $dkdv2 dq2 $dq2 hold $hold: /"
    if cmp -s "$work/first.bin" "$work/other.bin"; then echo "  dkdv2 $dkdv2 dq2 $dq2 hold $hold: o, lse, dq, dk, dv the same bits"
    else echo "  dkdv2 $dkdv2 dq2 $dq2 hold $hold: outputs differ from the first run's bits (FAIL)"; status=1; fi
  fi
  shift 7
done
exit $status
