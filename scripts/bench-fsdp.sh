#!/usr/bin/env bash
# CPU step time and tokens/s of FSDP training for G = 1, 2, 4 workers (one coordinator more),
# same global batch, on a small model. Usage: bash scripts/bench-fsdp.sh [CONFIG] [STEPS]
# Prints a markdown table (for docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1
config=${1:-configs/models/tiny_gdn_lte.yaml}
steps=${2:-30}
common=(--set train.steps="$steps" --set train.log_every=1 --set train.global_batch=16 --set train.micro_batch=4
        --set train.seq_len=128)
echo "| workers G | processes | step time (ms) | tokens/s |"
echo "|---|---|---|---|"
for g in 1 2 4; do
  log=$(mpirun --oversubscribe -np $((g + 1)) build/hyla train "$config" "${common[@]}" 2>&1)
  # mean tokens/s over the second half of the steps (the first steps warm up)
  tps=$(echo "$log" | awk -v s="$steps" '/^step/ { split($2, a, "/"); if (a[1] > s / 2) {
          for (i = 1; i <= NF; i++) if ($i == "tok/s") { t += $(i - 1); n++ } } }
        END { if (n) printf "%.0f", t / n }')
  tokens_per_step=$((16 * 128))
  ms=$(awk -v t="$tps" -v k="$tokens_per_step" 'BEGIN { printf "%.1f", 1000 * k / t }')
  echo "| $g | $((g + 1)) | $ms | $tps |"
done
