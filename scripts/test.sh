#!/usr/bin/env bash
# Sets up, builds and runs every test hyla has (ctest labels unit, mpi, gpu, e2e).
# GPU tests skip themselves with a message when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
bash scripts/build.sh
cd build
ctest --output-on-failure --timeout 900 "$@"
