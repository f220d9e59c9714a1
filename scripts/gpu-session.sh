#!/usr/bin/env bash
# Everything one GPU call checks after a session's changes (built with `gpu-check.sh pack`):
# every op against the CPU, the tiny models' loss curves, the kernels at the reference's
# shapes and the 0.4B configs' training throughput, all into $OUT (summary on stdout).
cd "$(dirname "$0")/.."
out=${OUT:-.}
export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
(cd gpu-carry && OMP_NUM_THREADS=8 OPENBLAS_NUM_THREADS=1 timeout 200 ./test_cuda_ops >"$out/test_cuda_ops.txt" 2>&1
 echo "test_cuda_ops: exit $?"; grep -v "^ok" "$out/test_cuda_ops.txt" | tail -12)
timeout 150 bash scripts/gpu-check.sh run >/dev/null 2>&1; grep -E "worst" "$out/gpu-check.txt"
for only in ${KERNELS:-gdr attention lte_router nsa}; do
  timeout 60 ./gpu-carry/hyla bench kernels --backend cuda --precision bf16 --only $only --seconds 0.2 2>&1 |
    grep -E "fwd|bwd" >>"$out/bench-kernels-bf16.txt"
done
cat "$out/bench-kernels-bf16.txt"
for mb in ${MODELS:-gdn_lte_0.4B:4 gdn_0.4B:4 gdn_swa_0.4B:4 gdn_nsa_0.4B:4 transformer_0.4B:4}; do
  model=${mb%%:*} b=${mb##*:}
  timeout 100 ./gpu-carry/hyla bench train gpu-carry/configs/models/$model.yaml --backend cuda --steps 3 --warmup 1 \
    --set train.micro_batch=$b --set train.seq_len=4096 --set train.precision=bf16 --format json \
    >"$out/bench-train-$model-bf16-b$b.json" 2>"$out/bench-train-$model.err"
  echo "$model B=$b: exit $? $(tr -d '\n' <"$out/bench-train-$model-bf16-b$b.json" | grep -o '"tokens_per_s[^,]*,[^,]*,[^,]*' | head -1) $(tail -c 300 "$out/bench-train-$model.err")"
done
