#!/usr/bin/env bash
# The GPU check, in one call to a GPU host (Ubuntu 24.04 + CUDA 13, no libyaml/SQLite):
# build here on Debian with `bash scripts/gpu-check.sh pack` (CUDA on; the kernel test links
# only the kernels), carry gpu-carry.tgz to the GPU host, and there run
# `tar xzf gpu-carry.tgz && bash scripts/gpu-check.sh run`: it prints the device, runs every CUDA op against its CPU
# twin and trains tiny models 50 steps on the GPU and the CPU, writing the output to
# $OUT/gpu-check.txt when $OUT is set; `sanitize` runs compute-sanitizer on the op tests.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
  cmake -S . -B build-cuda -DHYLA_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build-cuda --target test_cuda_ops hyla gpu_test_nccl -j"$(nproc)"
  rm -rf gpu-carry && mkdir -p gpu-carry/lib gpu-carry/configs
  cp build-cuda/test_cuda_ops build-cuda/hyla build-cuda/gpu_test_nccl gpu-carry/ && cp -r configs/* gpu-carry/configs/
  # the libraries the GPU host may lack (libyaml, jansson, xxhash, SQLite, OpenBLAS, Open MPI,
  # and their dependencies); the C/C++ runtime and CUDA's own libraries are the host's
  ldd build-cuda/hyla build-cuda/test_cuda_ops | awk '$3 ~ /^\// { print $3 }' | sort -u |
    grep -v -E '/lib(c|m|stdc\+\+|gcc_s|pthread|dl|rt)\.so|cublas|nccl|libudev|libz\.so' |
    while read -r lib; do cp -L "$lib" gpu-carry/lib/; done
  # a device call carries at most 64 MiB with the working tree: no symbol tables (kernel names
  # live in the CUDA fat binaries, which strip keeps), and gzipped (~30 MB of ~98 with the
  # kernels' -lineinfo tables; with a baseline's gpu-carry-base.tgz beside it the two just
  # fit): carry gpu-carry.tgz and unpack it there first (tar xzf gpu-carry.tgz)
  strip gpu-carry/hyla gpu-carry/test_cuda_ops gpu-carry/gpu_test_nccl
  strip --strip-unneeded gpu-carry/lib/*.so* 2>/dev/null || true
  tar czf gpu-carry.tgz gpu-carry
  du -sh gpu-carry gpu-carry.tgz ;;
pack-base)
  # the binaries of another commit (default: the one before HEAD), packed the same way into
  # gpu-carry-base.tgz, for timings against it in the same GPU call (gpu-session.sh BASE=1):
  # the GPU hosts differ from call to call (H100 or H200, and one H100 from another)
  rev=$(git rev-parse --verify "${2:-HEAD~1}^{commit}") || { echo "pack-base: no commit ${2:-HEAD~1}" >&2; exit 2; }
  tree=$(mktemp -d)/base && git worktree add -q --detach "$tree" "$rev"
  (cd "$tree" && bash scripts/gpu-check.sh pack >/dev/null) && cp "$tree/gpu-carry.tgz" gpu-carry-base.tgz
  status=$?
  git worktree remove --force "$tree"
  [ $status = 0 ] && echo "gpu-carry-base.tgz: $(git log -1 --format='%h %s' "$rev" | cut -c1-80)"
  exit $status ;;
run)
  [ -d gpu-carry ] || tar xzf gpu-carry.tgz
  out=${OUT:-.}
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    # (SKIP_OPS=1: the op test ran already, as gpu-session.sh runs it)
    [ "${SKIP_OPS:-0}" = 1 ] || OMP_NUM_THREADS=8 OPENBLAS_NUM_THREADS=1 \
      LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} ./gpu-carry/test_cuda_ops
    # a tiny model trained 50 steps on the GPU against the CPU (fp32: within 1e-4 relative; bf16: 2e-2)
    export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} OPENBLAS_NUM_THREADS=1
    for model in tiny_gdn tiny_gdn_swa tiny_gdn_lte tiny_gdn_nsa tiny_transformer tiny_nsa; do
      rm -f "$out/$model.cpu" "$out/$model.gpu"
      common=(gpu-carry/configs/models/$model.yaml --set train.steps=50 --set train.seq_len=128 --set data.mqar_num_pairs=16
              --set data.mqar_num_queries=16 --quiet)
      OMP_NUM_THREADS=8 ./gpu-carry/hyla train "${common[@]}" --metrics "$out/$model.cpu"
      for precision in fp32 bf16; do
        bound=$([ $precision = fp32 ] && echo 1e-4 || echo 2e-2)
        rm -f "$out/$model.$precision"
        t0=$(date +%s.%N)
        ./gpu-carry/hyla train "${common[@]}" --backend cuda --set train.precision=$precision --metrics "$out/$model.$precision"
        t1=$(date +%s.%N)
        awk -v m="$model" -v p=$precision -v bound=$bound -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
          'NR == FNR { c[$1] = $2; next }
          { d = ($2 - c[$1]) / c[$1]; if (d < 0) d = -d; if (d > w) w = d; n++ }
          END { printf "%s: 50 steps on the GPU in %s (%.1f s) vs the CPU: worst loss difference %.3g relative over %d steps %s\n",
                m, p, s, w, n, (n == 50 && w <= bound + 0) ? "(ok, bound " bound ")" : "(FAIL, bound " bound ")" }' \
          "$out/$model.cpu" "$out/$model.$precision"
      done
    done
    # parameters gathered in bf16 over NCCL (one worker, so one GPU is enough) vs one process,
    # which rounds the same way: the same losses
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
    common=(gpu-carry/configs/models/tiny_gdn_lte.yaml --set train.steps=30 --set train.seq_len=128 --backend cuda
            --set train.precision=bf16 --quiet)
    rm -f "$out/bf16-gather.g0" "$out/bf16-gather.g1"
    ./gpu-carry/hyla train "${common[@]}" --metrics "$out/bf16-gather.g0"
    mpirun --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -np 2 ./gpu-carry/hyla train "${common[@]}" \
      --metrics "$out/bf16-gather.g1"
    awk 'NR == FNR { c[$1] = $2; next } { d = ($2 - c[$1]) / c[$1]; if (d < 0) d = -d; if (d > w) w = d; n++ }
      END { printf "bf16 parameter gathers over NCCL (1 worker) vs one process: worst loss difference %.3g over %d steps %s\n",
            w, n, (n == 30 && w <= 1e-6) ? "(ok, bound 1e-6)" : "(FAIL, bound 1e-6)" }' "$out/bf16-gather.g0" "$out/bf16-gather.g1"
    } 2>&1 | tee "$out/gpu-check.txt" ;;
sanitize)
  # compute-sanitizer memcheck and racecheck on the op tests (exit 3 on any error)
  out=${OUT:-.}
  export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  for tool in memcheck racecheck; do
    /usr/local/cuda/bin/compute-sanitizer --tool $tool --error-exitcode 3 ./gpu-carry/test_cuda_ops \
      >"$out/sanitizer-$tool.txt" 2>&1
    echo "$tool: exit $? | $(tail -1 "$out/sanitizer-$tool.txt")"
  done ;;
bench)
  # kernels at the reference's shapes (bf16 and fp32) and training throughput of the 0.4B
  # configs (T = 4096; B = 1, and B = 4 for laLTE), table and JSON, into $OUT
  out=${OUT:-.}
  export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  seconds=${BENCH_SECONDS:-0.3}
  # NSA's kernels are still the per-row reference (seconds per call at this shape): last, bounded
  for precision in bf16 fp32; do
    for only in gdr attention lte_router nsa; do
      timeout "${BENCH_KERNEL_TIMEOUT:-150}" ./gpu-carry/hyla bench kernels --backend cuda --seconds "$seconds" \
        --precision $precision --only $only >>"$out/bench-kernels-$precision.txt" || echo "($only: exit $?)"
    done
    cat "$out/bench-kernels-$precision.txt"
  done
  train() { # MODEL PRECISION BATCH
    timeout "${BENCH_TRAIN_TIMEOUT:-120}" ./gpu-carry/hyla bench train gpu-carry/configs/models/$1.yaml --backend cuda \
      --steps "${BENCH_STEPS:-3}" --warmup "${BENCH_WARMUP:-1}" --set train.micro_batch="$3" --set train.seq_len=4096 \
      --set train.precision="$2" --format json >"$out/bench-train-$1-$2-b$3.json" || echo "$1 $2 B=$3: exit $?"
    cat "$out/bench-train-$1-$2-b$3.json"
  }
  for model in ${BENCH_MODELS:-gdn_lte_0.4B gdn_0.4B gdn_swa_0.4B transformer_0.4B}; do
    train "$model" bf16 1
    train "$model" bf16 4
  done
  train gdn_lte_0.4B fp32 1
  # laNSA: NSA's per-row kernels take seconds per layer; one step after none of warm-up
  BENCH_STEPS=1 BENCH_WARMUP=0 BENCH_TRAIN_TIMEOUT=300 train gdn_nsa_0.4B bf16 1 ;;
profile)
  # where a 0.4B laLTE step's time goes: per-op totals, every op synchronised (stderr)
  out=${OUT:-.}
  export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
  HYLA_PROFILE_OPS=1 ./gpu-carry/hyla bench train gpu-carry/configs/models/${PROFILE_MODEL:-gdn_lte_0.4B}.yaml \
    --backend cuda --steps 1 --warmup 1 --set train.micro_batch=1 --set train.seq_len=4096 \
    --set train.precision=${PROFILE_PRECISION:-fp32} 2>&1 | tee "$out/profile-${PROFILE_MODEL:-gdn_lte_0.4B}.txt" ;;
multi)
  # FSDP over NCCL on every GPU of the host against one GPU: loss curves (fp32 and bf16),
  # tokens/s per GPU, a checkpoint saved on all GPUs and resumed on one, a batch on the GPUs
  out=${OUT:-.}
  export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=4 HYLA_FSDP_SERIAL=0
  gpus=$(nvidia-smi -L | wc -l)
  mpi=(mpirun --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x OMP_NUM_THREADS)
  # compare_losses NAME REFERENCE OTHER BOUND [FIRST_STEP]
  compare_losses() {
    awk -v m="$1" -v bound="$4" -v first="${5:-1}" 'NR == FNR { c[$1] = $2; next } $1 >= first && ($1 in c) {
          d = ($2 - c[$1]) / c[$1]; if (d < 0) d = -d; if (d > w) w = d; n++ }
        END { printf "%s: worst loss difference %.3g relative over %d steps %s\n", m, w, n,
              (n > 0 && w <= bound + 0) ? "(ok, bound " bound ")" : "(FAIL, bound " bound ")" }' "$2" "$3"
  }
  {
    nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c
    "${mpi[@]}" -np "$gpus" ./gpu-carry/gpu_test_nccl | tail -1
    for model in tiny_gdn tiny_gdn_lte; do
      for precision in fp32 bf16; do
        common=(gpu-carry/configs/models/$model.yaml --backend cuda --set train.steps=30 --set train.global_batch=8 --set train.micro_batch=4
                --set train.precision=$precision --quiet)
        rm -f "$out/$model.$precision.g1" "$out/$model.$precision.g$gpus"
        ./gpu-carry/hyla train "${common[@]}" --metrics "$out/$model.$precision.g1"
        "${mpi[@]}" -np $((gpus + 1)) ./gpu-carry/hyla train "${common[@]}" --metrics "$out/$model.$precision.g$gpus"
        compare_losses "$model $precision: $gpus GPUs (FSDP over NCCL) vs 1 GPU, 30 steps" \
          "$out/$model.$precision.g1" "$out/$model.$precision.g$gpus" "$([ $precision = fp32 ] && echo 1e-4 || echo 2e-2)"
      done
    done
    # a checkpoint saved on all GPUs at step 20, resumed on one: steps 21..30 as without the stop
    rm -rf "$out/ckpt" "$out/resumed"
    ck=(gpu-carry/configs/models/tiny_gdn_lte.yaml --backend cuda --set train.global_batch=8 --set train.micro_batch=4 --quiet
        --set checkpoint.dir="$out/ckpt" --set checkpoint.interval=20)
    "${mpi[@]}" -np $((gpus + 1)) ./gpu-carry/hyla train "${ck[@]}" --set train.steps=20
    ./gpu-carry/hyla train "${ck[@]}" --set train.steps=30 --resume --metrics "$out/resumed"
    compare_losses "checkpoint saved on $gpus GPUs at step 20, resumed on 1 GPU (steps 21-30)" \
      "$out/tiny_gdn_lte.fp32.g1" "$out/resumed" 1e-4 21
    # the 0.4B laLTE (bf16, 1 x 4096 tokens per GPU per micro-batch): tokens/s from the progress lines
    big() { # NAME GPUS STEPS GLOBAL_BATCH [extra --set ...]
      local name=$1 g=$2 steps=$3 gb=$4; shift 4
      local run=(gpu-carry/configs/models/gdn_lte_0.4B.yaml --backend cuda --set train.precision=bf16
                 --set train.micro_batch=1 --set train.global_batch="$gb" --set train.seq_len=4096
                 --set train.steps="$steps" --set train.log_every=1 --set data.task=mqar --set data.eval_samples=1
                 --metrics "$out/$name.loss" "$@")
      rm -f "$out/$name.loss"
      if [ "$g" = 1 ]; then ./gpu-carry/hyla train "${run[@]}" >"$out/$name.txt" 2>&1
      else "${mpi[@]}" -x HYLA_FSDP_SERIAL -np $((g + 1)) ./gpu-carry/hyla train "${run[@]}" >"$out/$name.txt" 2>&1; fi
      awk -v name="$name" -v g="$g" -F'|' '/^step/ { split($1, a, " "); split(a[2], b, "/"); if (b[1] + 0 >= 4) {
            gsub(/[^0-9.]/, "", $5); s += $5; n++ } }
        END { if (n) printf "%s: %.0f tokens/s on %d GPU(s), %.0f per GPU (steps 4 on)\n", name, s / n, g, s / n / g;
              else print name ": no step lines (see " name ".txt)" }' "$out/$name.txt"
    }
    # equivalence over 50 steps, global batch 2: one GPU accumulating 2 micro-batches vs 2 GPUs
    big laLTE-0.4B-g1-gb2 1 50 2
    big laLTE-0.4B-g$gpus-gb$gpus "$gpus" 50 "$gpus"
    [ "$gpus" = 2 ] && compare_losses "0.4B laLTE bf16, 50 steps, global batch 2: $gpus GPUs vs 1 GPU" \
      "$out/laLTE-0.4B-g1-gb2.loss" "$out/laLTE-0.4B-g2-gb2.loss" 2e-2
    # weak scaling: 1 x 4096 tokens per GPU per step
    big laLTE-0.4B-g1-gb1 1 10 1
    # overlap: the same run with every collective serialised (HYLA_FSDP_SERIAL=1)
    export HYLA_FSDP_SERIAL=1
    big laLTE-0.4B-g$gpus-serial "$gpus" 10 "$gpus"
    export HYLA_FSDP_SERIAL=0
    # a batch of 4 runs with all GPUs per run, recorded in the ledger with head statistics
    rm -f "$out/ledger.db"
    sed "s/^workers_per_run: 1/workers_per_run: $gpus/; s|^base: ../demo/|base: $PWD/gpu-carry/configs/demo/|" \
      gpu-carry/configs/batches/demo_lte_budget.yaml >"$out/batch-all-gpus.yaml"
    "${mpi[@]}" -np $((gpus + 1)) ./gpu-carry/hyla run "$out/batch-all-gpus.yaml" --backend cuda \
      --ledger "$out/ledger.db" --set train.steps=60 >"$out/batch.txt" 2>&1; echo "batch: exit $? | $(grep -E 'finished' "$out/batch.txt" | tail -1)"
    ./gpu-carry/hyla ledger --ledger "$out/ledger.db" runs 2>&1 | head -8
    ./gpu-carry/hyla ledger --ledger "$out/ledger.db" heads 1 2>&1 | head -6
  } 2>&1 | tee "$out/multi.txt" ;;
*) echo "usage: bash scripts/gpu-check.sh pack|run|sanitize|bench|profile|multi" >&2; exit 2 ;;
esac
