#!/usr/bin/env bash
# hyla's main job: sets up, builds and runs the forgetfulness demo — a tiny pure GDN and a
# tiny laLTE of about the same size trained on MQAR with more key-value pairs than the GDN's
# recurrent state holds, then their held-out recall side by side with the LTE layers' kept
# tokens and λ_h per head. CPU only. `--json` prints one JSON object instead of the table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
source scripts/env.sh
bash scripts/build.sh >&2
exec build/hyla demo "$@"
