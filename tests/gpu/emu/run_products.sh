#!/usr/bin/env bash
# The ops built on matrix products (kernels/cuda/cuda_linear.cu, cuda_mlp.cu, cuda_swiglu.cu,
# cuda_lm_head_ce.cu) on the CPU through emu.h, cuBLAS replaced by plain loops
# (products_emu.h), against the fp32 CPU twins: fp32 mode within 1e-5, bf16 mode within 1e-2
# (products_emu.cpp), the bf16 MLP also against a model of its roundings. Then the bf16-mode
# outputs bit for bit across the switches that must not change them: each op's copies shared or
# per product (HYLA_GEMM_SHARED_COPIES, which also decides whether the LM head copies its weight
# once per op) and the MLP's intermediates written in bf16 or copied (HYLA_MLP_BF16). With the
# MLP's bf16 activations (HYLA_MLP_BF16_ACTS=1, which rounds gate, up and dz once more and acts
# only with HYLA_MLP_BF16 on) the outputs must differ from those without and agree bit for bit
# across HYLA_GEMM_SHARED_COPIES. Runs with HYLA_MLP_BF16_ACTS as set, else with 0 and with 1.
# Then weights with bf16 twins (FSDP's) and held activations (hold_bf16_copy): the same bits as
# without, fewer copies.
# A check of the ops' logic (operand shapes, strides, transposes, which copy serves which
# product, scratch layouts), not of cuBLAS or of speed.
# Needs build-cuda/ (or $BUILD) for the twins' objects.
set -euo pipefail
. "$(dirname "$0")/emu_build.sh" # root, build, work (removed at exit), emu_compile
python3 "$root/tests/gpu/emu/cuda_to_cpp.py" "$root/kernels/cuda" "$work" --keep-register \
  --replace '#include "../ops/lm_head_chunk.h"=>#include "kernels/ops/lm_head_chunk.h"' \
  --replace "cuda_matmul_bf16()=>emu_bf16" \
  --head '#include "emu.h"\n#include "products_emu.h"' \
  cuda_linear.cu cuda_mlp.cu cuda_swiglu.cu cuda_lm_head_ce.cu cuda_bf16_twins.cu cuda_products.cuh cuda_swiglu.cuh cuda_column_sum.cuh cuda_bf16_convert.cuh \
  cuda_reduce.cuh cuda_vec.cuh
cp "$root/tests/gpu/emu/"{emu.h,emu_check.h,products_emu.h,products_emu.cpp} "$work/"
emu_compile cuda_linear cuda_mlp cuda_swiglu cuda_lm_head_ce cuda_bf16_twins products_emu
cd "$work"
ops="$build/CMakeFiles/hyla_cpu_ops_f32.dir/kernels/cpu"
g++ -pthread *.o "$ops/op_linear.c.o" "$ops/op_lm_head_ce.c.o" "$build/libhyla_common.a" -lopenblas -fopenmp -lm \
  -o "$work/emu"
status=0
same() { # same FILE_A FILE_B WHAT: the bf16 outputs bit for bit
  if cmp -s "$work/out.$1" "$work/out.$2"; then echo "bf16 outputs of $2: the same bits as $1 ($3)"
  else echo "FAIL: bf16 outputs of $2 differ from $1 ($3)"; status=1; fi
}
acts_runs=${HYLA_MLP_BF16_ACTS:-0 1}
for acts in $acts_runs; do
  for mode in "1 1" "0 0" "1 0" "0 1"; do
    set -- $mode
    echo "HYLA_GEMM_SHARED_COPIES=$1 HYLA_MLP_BF16=$2 HYLA_MLP_BF16_ACTS=$acts:"
    HYLA_GEMM_SHARED_COPIES=$1 HYLA_MLP_BF16=$2 HYLA_MLP_BF16_ACTS=$acts OMP_NUM_THREADS=1 "$work/emu" \
      "$work/out.$acts$1$2" || status=1
  done
  # out.ASM: A = HYLA_MLP_BF16_ACTS, S = HYLA_GEMM_SHARED_COPIES, M = HYLA_MLP_BF16
  if [ "$acts" = 0 ]; then
    for other in 000 010 001; do same 011 "$other" "bf16 activations off"; done
  else
    same 111 101 "bf16 activations on: copies shared or not"
    same 110 100 "bf16 activations on, HYLA_MLP_BF16 off: copies shared or not"
  fi
done
if [ -f "$work/out.011" ] && [ -f "$work/out.111" ]; then
  if cmp -s "$work/out.011" "$work/out.111"; then
    echo "FAIL: bf16 outputs the same with bf16 activations on and off (the MLP's path not taken?)"; status=1
  else echo "bf16 outputs of 111 differ from 011 (bf16 activations on: the MLP's roundings)"; fi
  same 010 110 "HYLA_MLP_BF16 off: bf16 activations take no effect"
fi
# Weights with bf16 twins (EMU_TWINS=1, as FSDP's units gathered in bf16): read from the twin
# (HYLA_BF16_TWINS=1) the products give the same bits with fewer copies; refused (=0), as many.
copies() { grep -o "copies made: [0-9]*" "$1" | grep -o "[0-9]*$"; }
for twins in 1 0; do
  EMU_TWINS=1 HYLA_BF16_TWINS=$twins HYLA_GEMM_SHARED_COPIES=1 HYLA_MLP_BF16=1 HYLA_MLP_BF16_ACTS=0 OMP_NUM_THREADS=1 \
    "$work/emu" "$work/out.twins$twins" >"$work/log.twins$twins" || { cat "$work/log.twins$twins"; status=1; }
done
HYLA_GEMM_SHARED_COPIES=1 HYLA_MLP_BF16=1 HYLA_MLP_BF16_ACTS=0 OMP_NUM_THREADS=1 "$work/emu" "$work/out.plain" >"$work/log.plain"
same plain twins1 "weights read from their bf16 twins"
same plain twins0 "twins refused"
with=$(copies "$work/log.twins1") without=$(copies "$work/log.plain") refused=$(copies "$work/log.twins0")
if [ "$with" -lt "$without" ] && [ "$refused" -eq "$without" ]; then
  echo "copies with twins $with, without $without, refused $refused"
else echo "FAIL: copies with twins $with, without $without, refused $refused"; status=1; fi
# Activations held (EMU_HOLD=1, as the model holds its saved activations): read from the held
# copies (HYLA_HOLD_COPIES=1) the products give the same bits with fewer copies; not held (=0),
# as many.
for hold in 1 0; do
  EMU_HOLD=1 HYLA_HOLD_COPIES=$hold HYLA_GEMM_SHARED_COPIES=1 HYLA_MLP_BF16=1 HYLA_MLP_BF16_ACTS=0 OMP_NUM_THREADS=1 \
    "$work/emu" "$work/out.hold$hold" >"$work/log.hold$hold" || { cat "$work/log.hold$hold"; status=1; }
done
same plain hold1 "activations read from held copies"
same plain hold0 "holding switched off"
with=$(copies "$work/log.hold1") refused=$(copies "$work/log.hold0")
if [ "$with" -lt "$without" ] && [ "$refused" -eq "$without" ]; then
  echo "copies with held activations $with, without $without, holding off $refused"
else echo "FAIL: copies with held activations $with, without $without, holding off $refused"; status=1; fi
# Thin products reading their wide operand's twin (HYLA_GEMM_THIN_TWINS=1, cuda_linear.cu; weights
# and activations with twins as in training): the same bits (the same roundings: cuBLAS rounds
# fp32 operands to nearest even too), the copies counted otherwise (the path ran).
for thin in 1 0; do
  EMU_TWINS=1 EMU_HOLD=1 HYLA_GEMM_THIN_TWINS=$thin HYLA_GEMM_SHARED_COPIES=1 HYLA_MLP_BF16=1 HYLA_MLP_BF16_ACTS=0 \
    OMP_NUM_THREADS=1 "$work/emu" "$work/out.thin$thin" >"$work/log.thin$thin" || { cat "$work/log.thin$thin"; status=1; }
done
same thin0 thin1 "thin products reading bf16 twins"
with=$(copies "$work/log.thin1") without=$(copies "$work/log.thin0")
if [ "$with" != "$without" ]; then echo "copies with thin products on twins $with, without $without"
else echo "FAIL: copies with thin products on twins $with, without $without (the path did not run?)"; status=1; fi
# The down projection onto the residual as cuBLASLt's C (HYLA_GEMM_ONTO=1, cuda_gemm_lt.cu; here C
# copied into D and added onto, as the copy of the residual is) against the copy of the
# residual into y (=0): the same bits, and it ran.
for onto in 1 0; do
  HYLA_GEMM_ONTO=$onto HYLA_GEMM_SHARED_COPIES=1 HYLA_MLP_BF16=1 HYLA_MLP_BF16_ACTS=1 OMP_NUM_THREADS=1 "$work/emu" \
    "$work/out.onto$onto" >"$work/log.onto$onto" || { cat "$work/log.onto$onto"; status=1; }
done
same onto0 onto1 "the down projection onto the residual (HYLA_GEMM_ONTO=1)"
onto=$(grep -o "products onto a separate C: [0-9]*" "$work/log.onto1" | grep -o "[0-9]*$")
if [ "${onto:-0}" -gt 0 ]; then echo "products onto a separate C: $onto"
else echo "FAIL: HYLA_GEMM_ONTO=1 made no product onto a separate C"; status=1; fi
exit $status
