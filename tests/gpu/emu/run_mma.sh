#!/usr/bin/env bash
# The self-test of mma_emu.h (the emulation's stand-in for kernels/cuda/cuda_mma.cuh: mma.sync
# m16n8k16 and ldmatrix on register fragments): its layouts against hand-built fragments and
# naive products (mma_emu_selftest.cpp). Needs only g++.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
g++ -std=c++20 -O1 -pthread -w -I"$here" ${EMU_CXXFLAGS:-} "$here/mma_emu_selftest.cpp" -o "$work/selftest"
"$work/selftest"
