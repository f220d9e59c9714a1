#!/usr/bin/env bash
# hyla train / eval from the command line: one process and mpirun -np 3 (2 FSDP workers)
# give the same losses; --out + eval; bad input gets a clear message and a non-zero exit.
source "$(dirname "$0")/lib.sh"
cfg=$SRC/configs/models/tiny_gdn_lte.yaml
common=(--set train.steps=8 --set train.log_every=1 --set train.seq_len=80 --set train.global_batch=8
        --set train.micro_batch=4 --set data.mqar_num_pairs=12 --set data.mqar_num_queries=12)

"$HYLA" train "$cfg" "${common[@]}" --out "$TMP/out" >"$TMP/one.log" 2>&1 || fail "single-process train ran"
mpirun --oversubscribe -np 3 "$HYLA" train "$cfg" "${common[@]}" --set train.micro_batch=4 >"$TMP/mpi.log" 2>&1 \
  || fail "mpirun -np 3 train ran: $(tail -3 "$TMP/mpi.log")"
losses() { awk '/^step/ { print $2, $5 }' "$1"; }
if [ "$(losses "$TMP/one.log" | wc -l)" -eq 8 ] && diff <(losses "$TMP/one.log") <(losses "$TMP/mpi.log") >/dev/null
then pass "mpirun -np 3 (2 sharded workers) prints the single-process losses at every step"
else fail "losses differ: $(paste <(losses "$TMP/one.log") <(losses "$TMP/mpi.log") | head -8)"; fi
# the serialised FSDP mode (HYLA_FSDP_SERIAL=1, for measuring the overlap) changes no number
HYLA_FSDP_SERIAL=1 mpirun --oversubscribe -x HYLA_FSDP_SERIAL -np 3 "$HYLA" train "$cfg" "${common[@]}" \
  >"$TMP/serial.log" 2>&1 || fail "HYLA_FSDP_SERIAL=1 mpirun -np 3 train ran: $(tail -3 "$TMP/serial.log")"
diff <(losses "$TMP/mpi.log") <(losses "$TMP/serial.log") >/dev/null \
  && pass "HYLA_FSDP_SERIAL=1 (no overlap) gives the overlapped run's losses" || fail "serialised FSDP losses differ"
grep -q "sharded .* / 2 workers" "$TMP/mpi.log" && pass "memory report shows 2 workers" || fail "memory report"
grep -q "held-out mqar: accuracy" "$TMP/mpi.log" && pass "held-out accuracy printed under mpirun" || fail "eval under mpirun"

[ -f "$TMP/out/model.safetensors" ] && [ -f "$TMP/out/config.yaml" ] && pass "--out wrote weights and config" \
  || fail "--out files"
json=$("$HYLA" eval --weights "$TMP/out" --task mqar --samples 32 --format json 2>&1)
grep -q '"task": *"mqar"' <<<"$json" && grep -q '"accuracy"' <<<"$json" && grep -q '"samples": *32' <<<"$json" \
  && pass "hyla eval --format json: task, samples, accuracy" || fail "eval json: $json"

"$HYLA" export --weights "$TMP/out/model.safetensors" --config "$TMP/out/config.yaml" -o "$TMP/b1.safetensors" \
  --dtype bf16 >/dev/null && "$HYLA" export --weights "$TMP/b1.safetensors" --config "$TMP/out/config.yaml" \
  -o "$TMP/b2.safetensors" --dtype bf16 >/dev/null && cmp -s "$TMP/b1.safetensors" "$TMP/b2.safetensors" \
  && pass "hyla export: a BF16 file imported and exported again is bit-identical" || fail "export bf16 round trip"
expect_fail "export with an unknown dtype" "choose f32 or bf16" \
  "$HYLA" export --weights "$TMP/b1.safetensors" --config "$TMP/out/config.yaml" -o "$TMP/x" --dtype f8

expect_fail "global batch that 2 workers cannot split" "cannot be split over 2 workers" \
  mpirun --oversubscribe -np 3 "$HYLA" train "$cfg" "${common[@]}" --set train.global_batch=6
expect_fail "unknown config key names the key and the valid ones" "valid keys" \
  "$HYLA" train "$cfg" --set train.lrr=1
expect_fail "missing config file" "missing.yaml" "$HYLA" train "$TMP/missing.yaml"
expect_fail "train.precision = bf16 on the CPU says it needs a GPU" "needs a GPU" \
  "$HYLA" train "$cfg" "${common[@]}" --set train.precision=bf16
expect_fail "an unknown precision names the choices" "bf16" "$HYLA" train "$cfg" --set train.precision=fp8
expect_fail "an unknown backend names the choices" "choose cpu or cuda" "$HYLA" train "$cfg" --backend tpu
expect_fail "two configs" "more than one config" "$HYLA" train "$cfg" "$cfg"

# hyla bench train: one process, synthetic MQAR data, JSON with a positive tokens/s
bench=$("$HYLA" bench train "$cfg" --set train.seq_len=80 --set train.micro_batch=2 --steps 2 --warmup 1 \
  --format json 2>&1)
awk '/"tokens_per_s"/ { gsub(/[^0-9.]/, "", $2); ok = $2 + 0 > 0 } END { exit !ok }' <<<"$bench" \
  && grep -q '"steps": *2' <<<"$bench" && pass "hyla bench train --format json: 2 measured steps, tokens/s > 0" \
  || fail "bench train json: $bench"
expect_fail "bench train with --steps 0" "--steps needs a whole number" "$HYLA" bench train "$cfg" --steps 0
printf 'model:\n  hidden_size: [1, 2\n' >"$TMP/bad.yaml"
expect_fail "malformed YAML names line and column" "bad.yaml:" "$HYLA" train "$TMP/bad.yaml"
expect_fail "eval of weights from another config" "tensor" \
  "$HYLA" eval --weights "$TMP/out/model.safetensors" --config "$SRC/configs/models/tiny_gdn.yaml" --task mqar
finish
