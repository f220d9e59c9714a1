#!/usr/bin/env bash
# hyla's main job: sets up, builds and runs it. (Until `hyla train` lands, the main job
# is the kernel benchmark at tiny-model shapes.) Extra arguments go to hyla bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
source scripts/env.sh
bash scripts/build.sh >&2
exec build/hyla bench kernels "$@"
