#!/usr/bin/env bash
# The chunked gated delta rule's CUDA kernels (kernels/cuda/cuda_gdr_chunk*.cu) run on the CPU
# through emu.h (a fiber per CUDA thread, barriers for __syncthreads / __syncwarp,
# WMMA tiles as plain 16 x 16 products on bf16-rounded values; cp.async copies landing only at
# the wait, NaN before, through cp_async_emu.h), against the fp32 CPU twin; the backward's last
# step in both forms (HYLA_GDR_GRADS2), the state / output kernels in both forms
# (HYLA_GDR_FWD2), the prep kernel in both forms (HYLA_GDR_PREP2) and the two-kernel step's
# grads_dk in both forms (HYLA_GDR_DK2), each within the bound and
# compared bit for bit (gdr_chunk_emu.cpp). The default shapes: lengths that are and are not
# multiples of 64, head dims from 8 to 128, several heads, dims not multiples of 4 or odd (PREP2's
# loads one float at a time there, float4 elsewhere), and one of close keys (states + 4: I + A
# nearly singular, so that a changed fp32 summation order in the inversion shows in T's bf16
# bits; its bound is reported, not enforced).
# A check of the kernels' logic (indices, signs, layouts, padding, cp.async waits) where no GPU
# is at hand; not of their speed, and not a race detector. Needs build-cuda/ (or build/) for the twin.
#   bash tests/gpu/emu/run.sh [B L H dk dv states]...   states: 1 initial, 2 dfinal, 3 both, +4 close keys
set -euo pipefail
. "$(dirname "$0")/emu_build.sh" # root, build, work (removed at exit), emu_compile
python3 "$root/tests/gpu/emu/cuda_to_cpp.py" "$root/kernels/cuda" "$work" --cp-async \
  --replace '#include "cuda_gdr_chunk.cuh"=>#include "chunk.h"' --replace '#include <cuda_pipeline.h>=>#include "cp_async_emu.h"' \
  --replace '#include "cuda_mma.cuh"=>#include "mma_emu.h"' --replace '#include "cuda_gdr_chunk_frag.cuh"=>#include "frag.h"' \
  cuda_gdr_chunk.cuh:chunk.h cuda_gdr_chunk_frag.cuh:frag.h cuda_gdr_chunk_fwd.cu:fwd.cpp cuda_gdr_chunk_bwd.cu:bwd.cpp cuda_gdr_chunk_state3.cu:state3.cpp cuda_gdr_chunk_out3.cu:out3.cpp cuda_gdr_chunk_local2.cu:local2.cpp
cp "$root/tests/gpu/emu/"{emu.h,cp_async_emu.h,mma_emu.h,gdr_chunk_emu.cpp} "$work/"
emu_compile gdr_chunk_emu fwd bwd state3 out3 local2
g++ -pthread "$work/gdr_chunk_emu.o" "$work/fwd.o" "$work/bwd.o" "$work/state3.o" "$work/out3.o" "$work/local2.o" \
  "$build/CMakeFiles/hyla_cpu_ops_f32.dir/kernels/cpu/op_gdr_chunk.c.o" "$build/libhyla_common.a" \
  -lopenblas -fopenmp -lm -o "$work/emu"
if [ $# -eq 0 ]; then set -- 1 37 1 16 8 3 1 130 1 40 24 3 2 70 1 64 64 0 1 200 1 128 128 1 1 45 2 30 18 2 1 64 3 44 36 1 1 130 1 40 24 7 1 70 1 33 20 1; fi
status=0 # every shape runs; any above the bound fails the script
while [ $# -ge 6 ]; do OMP_NUM_THREADS=1 "$work/emu" "$1" "$2" "$3" "$4" "$5" "$6" || status=1; shift 6; done
exit $status
