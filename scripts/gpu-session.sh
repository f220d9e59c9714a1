#!/usr/bin/env bash
# Everything one GPU call checks after a session's changes (built with `gpu-check.sh pack`),
# most important first (a call cut short still returns what it wrote): every op against the
# CPU, the 0.4B laLTE's training throughput, the kernels at the reference's shapes, the tiny
# models' loss curves against the CPU, the other 0.4B configs. Output into $OUT.
cd "$(dirname "$0")/.."
out=${OUT:-.}
export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
train() { # MODEL BATCH
  timeout 90 ./gpu-carry/hyla bench train gpu-carry/configs/models/$1.yaml --backend cuda --steps 3 --warmup 1 \
    --set train.micro_batch=$2 --set train.seq_len=4096 --set train.precision=bf16 --format json \
    >"$out/bench-train-$1-bf16-b$2${TAG:-}.json" 2>"$out/bench-train-$1${TAG:-}.err"
  echo "$1 B=$2${TAG:-}: exit $? $(tr -d '\n ' <"$out/bench-train-$1-bf16-b$2${TAG:-}.json" | grep -o '"tokens_per_s[^,]*,[^,]*' | head -1) $(tail -c 200 "$out/bench-train-$1${TAG:-}.err")"
}
(cd gpu-carry && OMP_NUM_THREADS=16 OPENBLAS_NUM_THREADS=1 timeout ${TEST_TIMEOUT:-150} ./test_cuda_ops $TEST_GROUPS >"$out/test_cuda_ops.txt" 2>&1
 echo "test_cuda_ops: exit $?"; grep -v "^ok" "$out/test_cuda_ops.txt" | tail -12)
# the paths that wait for this run to be switched on by default: the chunked delta rule,
# NSA's tiles, the router's per-tap products (and compute-sanitizer on them)
export_new="HYLA_GDR_CHUNKED=1 HYLA_NSA_TILED=1 HYLA_ROUTER_TAPS=1"
(cd gpu-carry && env $export_new OMP_NUM_THREADS=16 OPENBLAS_NUM_THREADS=1 timeout ${TEST_TIMEOUT:-150} \
   ./test_cuda_ops gdr nsa lte_router >"$out/test_cuda_ops-new-paths.txt" 2>&1
 echo "test_cuda_ops gdr nsa lte_router with $export_new: exit $?"; grep -v "^ok" "$out/test_cuda_ops-new-paths.txt" | tail -12
 env $export_new timeout ${TEST_TIMEOUT:-150} /usr/local/cuda/bin/compute-sanitizer --tool memcheck --error-exitcode 3 \
   ./test_cuda_ops gdr nsa lte_router >"$out/memcheck-new-paths.txt" 2>&1; echo "memcheck: exit $? $(tail -1 "$out/memcheck-new-paths.txt")")
train gdn_lte_0.4B 4
(export $export_new; TAG=-new-paths train gdn_lte_0.4B 4; TAG=-new-paths train gdn_nsa_0.4B 4)
timeout ${RUN_TIMEOUT:-150} bash scripts/gpu-check.sh run >/dev/null 2>&1; grep -E "worst" "$out/gpu-check.txt"
for only in ${KERNELS:-gdr nsa lte_router attention}; do
  for paths in "" "$export_new"; do
    env $paths timeout 40 ./gpu-carry/hyla bench kernels --backend cuda --precision bf16 --only $only --seconds 0.2 2>&1 |
      grep -E "fwd|bwd" | sed "s/^/${paths:+new paths: }/" | tee -a "$out/bench-kernels-bf16.txt"
  done
done
for mb in ${MODELS:-gdn_nsa_0.4B:4 gdn_0.4B:4 gdn_swa_0.4B:4 transformer_0.4B:4}; do train ${mb%%:*} ${mb##*:}; done
