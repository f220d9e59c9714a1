#!/usr/bin/env bash
# hyla run: a 4-run sweep on 2 groups of 1 worker (mpirun -np 3) recorded in the ledger,
# queried and reported; a relaunch skips finished runs; kill -9 in the middle of a batch
# loses no committed row and a relaunch finishes the rest; bad batch files get clear errors.
source "$(dirname "$0")/lib.sh"
batch=$SRC/configs/batches/demo_lte_budget.yaml
fast=(--set train.steps=30 --set train.log_every=10 --set data.eval_samples=64)
db=$TMP/ledger.db

"$HYLA" run "$batch" --dry-run >"$TMP/dry.log" 2>&1
[ "$(grep -c '^[0-9] *lte-budget/' "$TMP/dry.log")" -eq 4 ] && pass "--dry-run lists 4 runs" || fail "dry run: $(cat "$TMP/dry.log")"

mpirun --oversubscribe -np 3 "$HYLA" run "$batch" "${fast[@]}" --ledger "$db" >"$TMP/run.log" 2>&1 \
  && grep -q "4 finished, 0 failed" "$TMP/run.log" && pass "mpirun -np 3 hyla run: 4 runs finished on 2 groups" \
  || fail "batch run: $(tail -5 "$TMP/run.log")"
[ "$("$HYLA" ledger --ledger "$db" runs --format csv | grep -c ',finished,')" -eq 4 ] \
  && pass "hyla ledger runs shows 4 finished runs" || fail "ledger runs: $("$HYLA" ledger --ledger "$db" runs)"
"$HYLA" ledger --ledger "$db" runs 'attn.buffer_size>=32' --format csv >"$TMP/filter.csv"
[ "$(grep -c ',finished,' "$TMP/filter.csv")" -eq 2 ] && pass "numeric param filter selects the 2 runs with budget 32" \
  || fail "filter: $(cat "$TMP/filter.csv")"
"$HYLA" ledger --ledger "$db" heads 'lte-budget/attn.buffer_size=16,seed=1' --key lambda --format csv >"$TMP/heads.csv"
[ "$(wc -l <"$TMP/heads.csv")" -ge 3 ] && head -1 "$TMP/heads.csv" | grep -q "L1.h3" \
  && pass "hyla ledger heads: λ trajectories of 2 LTE layers x 4 heads" || fail "heads: $(head -3 "$TMP/heads.csv")"
"$HYLA" report --ledger "$db" -o "$TMP/report.html" >/dev/null && grep -q "<svg" "$TMP/report.html" \
  && grep -q "attn.buffer_size=32,seed=2" "$TMP/report.html" && pass "hyla report writes the 4 runs with SVG charts" \
  || fail "report"

mpirun --oversubscribe -np 3 "$HYLA" run "$batch" "${fast[@]}" --ledger "$db" >"$TMP/again.log" 2>&1
grep -q "0 finished, 0 failed, 4 skipped" "$TMP/again.log" && pass "relaunch skips the 4 finished runs" \
  || fail "relaunch: $(tail -3 "$TMP/again.log")"

# kill -9 the whole job once a run has finished
kdb=$TMP/killed.db
setsid mpirun --oversubscribe -np 3 "$HYLA" run "$batch" --set train.steps=120 --set data.eval_samples=64 \
  --ledger "$kdb" >"$TMP/killed.log" 2>&1 &
job=$!
for _ in $(seq 1 600); do
  grep -q "^done" "$TMP/killed.log" 2>/dev/null && break
  sleep 0.2
done
kill -9 -- -"$job" 2>/dev/null; pkill -9 -f "$kdb" 2>/dev/null; wait "$job" 2>/dev/null
done_before=$(grep -c "^done" "$TMP/killed.log")
[ "$(sqlite3 "$kdb" 'PRAGMA integrity_check')" = ok ] && pass "after kill -9: integrity_check ok" || fail "integrity"
finished=$(sqlite3 "$kdb" "SELECT count(*) FROM runs WHERE status = 'finished'")
[ "$finished" -ge 1 ] && [ "$finished" -ge "$done_before" ] && pass "after kill -9: the $finished finished run(s) are still recorded" \
  || fail "finished after kill: $finished (done lines: $done_before)"
mpirun --oversubscribe -np 3 "$HYLA" run "$batch" --set train.steps=120 --set data.eval_samples=64 \
  --ledger "$kdb" >"$TMP/resumed.log" 2>&1
grep -q "$finished skipped" "$TMP/resumed.log" && [ "$(sqlite3 "$kdb" "SELECT count(*) FROM runs WHERE status = 'finished'")" -eq 4 ] \
  && pass "relaunch after kill -9: finished runs skipped, the others restarted and finished" \
  || fail "relaunch after kill: $(tail -4 "$TMP/resumed.log")"

printf 'base: x.yaml\nsweep:\n  grid: {model.attn.buffer_size: [1, 2]\n' >"$TMP/bad.yaml"
expect_fail "malformed batch YAML names line and column" "bad.yaml:" "$HYLA" run "$TMP/bad.yaml" --dry-run
printf 'base: %s\nsweep:\n  grid:\n    model.attn.buffr_size: [1, 2]\n' "$SRC/configs/demo/mqar_lte.yaml" >"$TMP/bad2.yaml"
expect_fail "unknown sweep key is named" "unknown sweep key 'model.attn.buffr_size'" "$HYLA" run "$TMP/bad2.yaml" --dry-run
printf 'base: %s\nworkers_per_run: 2\n' "$SRC/configs/demo/mqar_lte.yaml" >"$TMP/pairs.yaml"
expect_fail "3 workers cannot form groups of 2" "cannot form groups" \
  mpirun --oversubscribe -np 4 "$HYLA" run "$TMP/pairs.yaml" --ledger "$TMP/x.db" --set train.steps=1
finish
