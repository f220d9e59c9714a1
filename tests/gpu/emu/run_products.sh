#!/usr/bin/env bash
# The ops built on matrix products (kernels/cuda/cuda_linear.cu, cuda_mlp.cu, cuda_swiglu.cu,
# cuda_lm_head_ce.cu) on the CPU through emu.h, cuBLAS replaced by plain loops
# (products_emu.h), against the fp32 CPU twins: fp32 mode within 1e-5, bf16 mode within 1e-2
# (products_emu.cpp). Then the bf16-mode outputs bit for bit across the switches that must not
# change them: each op's copies shared or per product (HYLA_GEMM_SHARED_COPIES, which also
# decides whether the LM head copies its weight once per op) and the MLP's intermediates
# written in bf16 or copied (HYLA_MLP_BF16). A check of the ops' logic (operand shapes, strides,
# transposes, which copy serves which product, scratch layouts), not of cuBLAS or of speed.
# Needs build-cuda/ (or $BUILD) for the twins' objects.
set -euo pipefail
. "$(dirname "$0")/emu_build.sh" # root, build, work (removed at exit), emu_compile
python3 "$root/tests/gpu/emu/cuda_to_cpp.py" "$root/kernels/cuda" "$work" --keep-register \
  --replace '#include "../ops/lm_head_chunk.h"=>#include "kernels/ops/lm_head_chunk.h"' \
  --head '#include "emu.h"\n#include "products_emu.h"' \
  cuda_linear.cu cuda_mlp.cu cuda_swiglu.cu cuda_lm_head_ce.cu cuda_products.cuh cuda_swiglu.cuh cuda_column_sum.cuh \
  cuda_reduce.cuh cuda_vec.cuh
cp "$root/tests/gpu/emu/"{emu.h,emu_check.h,products_emu.h,products_emu.cpp} "$work/"
emu_compile cuda_linear cuda_mlp cuda_swiglu cuda_lm_head_ce products_emu
cd "$work"
ops="$build/CMakeFiles/hyla_cpu_ops_f32.dir/kernels/cpu"
g++ -pthread *.o "$ops/op_linear.c.o" "$ops/op_lm_head_ce.c.o" "$build/libhyla_common.a" -lopenblas -fopenmp -lm \
  -o "$work/emu"
status=0
for mode in "1 1" "0 0" "1 0" "0 1"; do
  set -- $mode
  echo "HYLA_GEMM_SHARED_COPIES=$1 HYLA_MLP_BF16=$2:"
  HYLA_GEMM_SHARED_COPIES=$1 HYLA_MLP_BF16=$2 OMP_NUM_THREADS=1 "$work/emu" "$work/out.$1$2" || status=1
done
for other in 00 10 01; do
  if cmp -s "$work/out.11" "$work/out.$other"; then echo "bf16 outputs of $other: the same bits as 11"
  else echo "FAIL: bf16 outputs of $other differ from 11"; status=1; fi
done
exit $status
