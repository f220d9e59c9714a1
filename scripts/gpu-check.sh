#!/usr/bin/env bash
# The GPU check, in one call to a GPU host (Ubuntu 24.04 + CUDA 13, no libyaml/SQLite):
# build here on Debian with `bash scripts/gpu-check.sh pack` (CUDA on; the kernel test links
# only the kernels), carry gpu-carry/ to the GPU host, and there run
# `bash scripts/gpu-check.sh run`: it prints the device and runs every CUDA op against its
# CPU twin, writing the output to $OUT/gpu-check.txt when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
  cmake -S . -B build-cuda -DHYLA_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build-cuda --target test_cuda_ops -j"$(nproc)"
  rm -rf gpu-carry && mkdir -p gpu-carry/lib && cp build-cuda/test_cuda_ops gpu-carry/
  # what the GPU host may lack: OpenBLAS (the CPU twins) and its Fortran runtime
  for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    cp -L "$(ldd build-cuda/test_cuda_ops | awk -v l="$lib" '$1 == l { print $3 }')" gpu-carry/lib/
  done
  du -sh gpu-carry ;;
run)
  out=${OUT:-.}
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    OMP_NUM_THREADS=8 OPENBLAS_NUM_THREADS=1 LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} \
      ./gpu-carry/test_cuda_ops; } 2>&1 | tee "$out/gpu-check.txt" ;;
*) echo "usage: bash scripts/gpu-check.sh pack|run" >&2; exit 2 ;;
esac
