# Sourced by the run_*.sh emulation scripts: sets root (the repository), build ($BUILD, or
# build-cuda/: the CPU twins' objects) and work (a scratch folder removed at exit), and
# defines emu_compile, which compiles the named rewritten sources ($work/NAME.cpp -> NAME.o)
# in parallel, each with the emulation's flags.
# Where the CPU has FMA, contraction is on as nvcc builds the kernels (GCC fuses only in a pass
# that -O1 leaves out: -fexpensive-optimizations turns it on). EMU_CXXFLAGS adds flags.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
build=${BUILD:-$root/build-cuda}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

emu_compile() {
  local fma="" pids="" f p
  if grep -qw fma /proc/cpuinfo 2>/dev/null; then fma="-mfma -ffp-contract=fast -fexpensive-optimizations"; fi
  for f in "$@"; do
    g++ -std=c++20 -O1 $fma ${EMU_CXXFLAGS:-} -pthread -w -I"$work" -I"$root" -I"$root/kernels/cuda" \
      -c "$work/$f.cpp" -o "$work/$f.o" &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p"; done
}
