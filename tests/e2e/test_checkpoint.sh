#!/usr/bin/env bash
# Checkpoints: (a) kill -9 at a random step, resume: later losses bit-identical; (b) a
# partial folder left by a killed save is ignored; (c) save on 4 workers, resume on 2 and 1:
# losses within 1e-5; (d) a flipped byte, a truncated shard, a manifest without a field are
# each detected and named, and resume falls back; (e) a failing write is an event, the run
# goes on and the previous checkpoint stays valid.
source "$(dirname "$0")/lib.sh"
cfg=$SRC/configs/models/tiny_gdn_lte.yaml
S=(--set train.seq_len=80 --set data.mqar_num_pairs=12 --set data.mqar_num_queries=12 --set train.log_every=1
   --set checkpoint.interval=2 --set checkpoint.keep_last=3 --quiet)

# (a)
"$HYLA" train "$cfg" "${S[@]}" --set train.steps=16 --set checkpoint.dir="$TMP/full" --metrics "$TMP/full.txt"
: >"$TMP/a1.txt"
kill_at=$((4 + RANDOM % 9))
"$HYLA" train "$cfg" "${S[@]}" --set train.steps=16 --set checkpoint.dir="$TMP/a" --metrics "$TMP/a1.txt" &
pid=$!
while [ "$(wc -l <"$TMP/a1.txt" 2>/dev/null || echo 0)" -lt "$kill_at" ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
kill -9 $pid; wait $pid 2>/dev/null
"$HYLA" train "$cfg" "${S[@]}" --set train.steps=16 --set checkpoint.dir="$TMP/a" --metrics "$TMP/a2.txt" --resume \
  2>"$TMP/a2.err"
first=$(head -1 "$TMP/a2.txt" | cut -d' ' -f1)
if [ -n "$first" ] && [ "$first" -gt 1 ] && diff <(awk -v f="$first" '$1 >= f' "$TMP/full.txt") "$TMP/a2.txt" >/dev/null
then pass "(a) kill -9 after step $kill_at, resume from step $((first - 1)): steps $first..16 bit-identical"
else fail "(a) resume after kill at $kill_at: $(head -3 "$TMP/a2.txt") vs $(awk -v f="$first" '$1 >= f' "$TMP/full.txt" | head -3)"; fi

# (b) a killed save leaves step_N.tmp: ignored, the newest committed one is used
mkdir -p "$TMP/full/step_00000099.tmp" && head -c 1000 /dev/urandom >"$TMP/full/step_00000099.tmp/rank_00000.bin"
"$HYLA" train "$cfg" "${S[@]}" --set train.steps=17 --set checkpoint.dir="$TMP/full" --metrics "$TMP/b.txt" --resume \
  2>"$TMP/b.err"
[ "$(head -1 "$TMP/b.txt" | cut -d' ' -f1)" = 17 ] && grep -q "partial checkpoint" "$TMP/b.err" \
  && pass "(b) a partial .tmp folder is ignored; resume used step 16" || fail "(b) $(cat "$TMP/b.err")"

# (c) 4 workers -> 2 and 1
C=(--set train.global_batch=8 --set train.micro_batch=2 --set train.steps=8 --set checkpoint.interval=4)
mpirun --oversubscribe -np 5 "$HYLA" train "$cfg" "${S[@]}" "${C[@]}" --set checkpoint.dir="$TMP/g4" \
  --metrics "$TMP/g4.txt" || fail "(c) G=4 run"
for g in 2 1; do
  rm -rf "$TMP/c$g"; mkdir -p "$TMP/c$g"; cp -r "$TMP/g4/step_00000004" "$TMP/c$g/"
  mpirun --oversubscribe -np $((g + 1)) "$HYLA" train "$cfg" "${S[@]}" "${C[@]}" --set checkpoint.dir="$TMP/c$g" \
    --metrics "$TMP/c$g.txt" --resume 2>/dev/null
  worst=$(awk 'NR==FNR { ref[$1] = $2; next } { d = ($2 - ref[$1]) / ref[$1]; if (d < 0) d = -d; if (d > w) w = d; n++ }
               END { if (n != 4) print "missing"; else printf "%.3g", w }' "$TMP/g4.txt" "$TMP/c$g.txt")
  awk -v w="$worst" 'BEGIN { exit !(w != "missing" && w + 0 <= 1e-5) }' \
    && pass "(c) saved on 4 workers, resumed on $g: steps 5..8 within $worst relative (bound 1e-5)" \
    || fail "(c) G=4 -> $g: worst $worst"
done

# (d) corruption is detected and named; resume falls back to the one before
"$HYLA" train "$cfg" "${S[@]}" --set train.steps=8 --set checkpoint.dir="$TMP/d" >/dev/null
printf '\x42' | dd of="$TMP/d/step_00000008/rank_00000.bin" bs=1 seek=5000 conv=notrunc status=none
expect_fail "(d) a flipped byte is named" "xxHash differs" "$HYLA" ckpt verify "$TMP/d/step_00000008"
"$HYLA" train "$cfg" "${S[@]}" --set train.steps=9 --set checkpoint.dir="$TMP/d" --metrics "$TMP/d.txt" --resume \
  2>"$TMP/d.err"
[ "$(head -1 "$TMP/d.txt" | cut -d' ' -f1)" = 7 ] && grep -q "step_00000008.*xxHash" "$TMP/d.err" \
  && pass "(d) resume skips the corrupted step 8 with its reason and uses step 6" || fail "(d) fallback: $(cat "$TMP/d.err")"
truncate -s -100 "$TMP/d/step_00000006/rank_00000.bin"
expect_fail "(d) a truncated shard is named" "size differs" "$HYLA" ckpt verify "$TMP/d/step_00000006"
sed -i '/"config_hash"/d' "$TMP/d/step_00000009/manifest.json"
expect_fail "(d) a manifest without a field is named" 'no field "config_hash"' "$HYLA" ckpt verify "$TMP/d/step_00000009"

# (e) a full disk during a save: an event, training goes on, the previous checkpoint stays valid
"$HYLA" train "$cfg" "${S[@]}" --set train.steps=4 --set checkpoint.dir="$TMP/e" >/dev/null
HYLA_CKPT_FAIL_AFTER_BYTES=100000 "$HYLA" train "$cfg" --set train.seq_len=80 --set data.mqar_num_pairs=12 \
  --set data.mqar_num_queries=12 --set checkpoint.interval=2 --set train.steps=8 --set checkpoint.dir="$TMP/e" \
  --resume >"$TMP/e.log" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "No space left" "$TMP/e.log" && "$HYLA" ckpt verify "$TMP/e/step_00000004" >/dev/null \
  && [ ! -d "$TMP/e/step_00000006.tmp" ] && [ ! -d "$TMP/e/step_00000006" ] \
  && pass "(e) a failing write is reported, the run finishes, step 4 stays valid, no partial folder" \
  || fail "(e) rc $rc: $(grep -i "note\|error" "$TMP/e.log" | head -3)"
finish
