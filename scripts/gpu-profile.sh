#!/usr/bin/env bash
# Where a training step's time goes, on the GPU host with the carried gpu-carry/ (built by
# `bash scripts/gpu-check.sh pack`): the per-op table (HYLA_PROFILE_OPS=1, every op
# synchronised) and, where Nsight Systems is installed, the per-kernel table of an
# unsynchronised step, for each MODELS entry (config:micro_batch). Output into $OUT.
cd "$(dirname "$0")/.."
out=${OUT:-.}
hyla=${HYLA:-./gpu-carry/hyla} # HYLA=gpu-carry/hyla-base profiles another build
export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
echo "nsys: ${nsys:-none}"
for mb in ${MODELS:-gdn_lte_0.4B:4 transformer_0.4B:4}; do
  model=${mb%%:*} batch=${mb##*:}
  args=(gpu-carry/configs/models/$model.yaml --backend cuda --steps 2 --warmup 1 --set train.micro_batch=$batch
        --set train.seq_len=4096 --set train.precision=bf16)
  HYLA_PROFILE_OPS=1 timeout 120 "$hyla" bench train "${args[@]}" >/dev/null 2>"$out/ops-$model.txt"
  echo "== $model B=$batch: per-op (exit $?)"; grep -A 30 "per-op profile" "$out/ops-$model.txt" | head -32
  if [ -n "$nsys" ]; then
    timeout 150 "$nsys" profile -o "/tmp/prof-$model" --force-overwrite true -t cuda --stats=false \
      "$hyla" bench train "${args[@]}" >/dev/null 2>&1
    timeout 100 "$nsys" stats -r cuda_gpu_kern_sum -f csv "/tmp/prof-$model.nsys-rep" >"$out/kernels-$model.csv" 2>/dev/null
    echo "== $model B=$batch: kernels (exit $?)"
    python3 - "$out/kernels-$model.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 8]
head, rows = rows[0], rows[1:]
t = head.index("Total Time (ns)"); n = head.index("Name"); c = head.index("Instances")
total = sum(float(r[t]) for r in rows)
print(f"{total/1e6:.1f} ms in kernels over the run")
for r in rows[:28]:
    print(f"{float(r[t])/total*100:5.1f}% {float(r[t])/1e6:9.1f} ms {r[c]:>7} {r[n][:110]}")
PY
  fi
done
