#!/usr/bin/env bash
# Everything one GPU call checks after a session's changes (built with `gpu-check.sh pack`),
# most important first, each part under its own time limit (a call cut short still returns
# what it wrote): every op against the CPU (FALLBACKS=1: also the paths the defaults replace;
# NEW_PATHS: paths not yet the defaults, switched on), the 0.4B configs' training throughput,
# every kernel of a laLTE step timed by Nsight Compute, the tiny models' loss curves against
# the CPU, compute-sanitizer on the op tests (SANITIZE_GROUPS), the kernels at the reference's
# shapes, the laLTE step's per-op profile. Printed output is the summary; the raw files go
# into $OUT/gpu-session.tgz (a device call returns at most 8 files), refreshed after every
# part. About 6 minutes on an H100; PARTS picks parts (default: ops train ncu check memcheck
# kernels racecheck profile; ncu-kernels on request).
cd "$(dirname "$0")/.."
[ -d gpu-carry ] || tar xzf gpu-carry.tgz # carried packed (gpu-check.sh pack)
final=${OUT:-.}
out=/tmp/gpu-session && rm -rf $out && mkdir -p $out
save() { tar czf "$final/gpu-session.tgz" -C /tmp gpu-session; }
export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/device.txt"
train() { # MODEL BATCH (CARRY: the unpacked build, default gpu-carry)
  local carry=${CARRY:-gpu-carry}
  LD_LIBRARY_PATH=$PWD/$carry/lib:/usr/local/cuda/lib64 timeout ${TRAIN_TIMEOUT:-50} ./$carry/hyla bench train \
    $carry/configs/models/$1.yaml --backend cuda --steps 3 \
    --warmup 1 --set train.micro_batch=$2 --set train.seq_len=4096 --set train.precision=bf16 --format json \
    >"$out/bench-train-$1-bf16-b$2${TAG:-}.json" 2>"$out/bench-train-$1${TAG:-}.err"
  local rc=$? json="$out/bench-train-$1-bf16-b$2${TAG:-}.json"
  # (last_loss: a path that keeps the bits, e.g. HYLA_COPIES_AT_SOURCE, gives the default's loss)
  echo "$1 B=$2${TAG:-}: exit $rc $(tr -d '\n ' <"$json" | grep -o '"tokens_per_s[^,]*,[^,]*' | head -1) $(tr -d '\n ' <"$json" | grep -o '"last_loss[^,]*') $(tr -d '\n ' <"$json" | grep -o '"mfu[^}]*') $(tail -c 200 "$out/bench-train-$1${TAG:-}.err")"
}
ops() { # NAME [GROUP...]: test_cuda_ops with the environment's switches
  local name=$1; shift
  (cd gpu-carry && OMP_NUM_THREADS=16 OPENBLAS_NUM_THREADS=1 timeout ${TEST_TIMEOUT:-120} ./test_cuda_ops "$@" \
     >"$out/test_cuda_ops-$name.txt" 2>&1
   echo "test_cuda_ops $name ($*): exit $?"; grep -v "^ok" "$out/test_cuda_ops-$name.txt" | tail -8)
}
# compute-sanitizer TOOL on the op tests, each of SANITIZE_GROUPS in its own process under its own
# limit of SECONDS (a slow group cannot starve the rest); all output in $out/TOOL.txt. cuBLAS's
# kernels are instrumented too (--kernel-name-exclude refused every filter tried on the GPU
# host, docs/gpu-runs/2026-12-07e-h100/README.md): the linear and LM head groups need ~200 s,
# the NSA group more than 400 s under racecheck (its fp32 shapes): nsa_bf16, the tensor-core
# tiles' shapes alone, runs among the others and nsa last.
sanitize() { # TOOL SECONDS
  : >"$out/$1.txt"
  for group in ${SANITIZE_GROUPS:-rmsnorm linear embedding_ce lm_head_ce optimizer gdn_parts attention lte_router gdr nsa_bf16 convert copies nsa}; do
    (cd gpu-carry && timeout $2 /usr/local/cuda/bin/compute-sanitizer --tool $1 --error-exitcode 3 ./test_cuda_ops $group \
       >>"$out/$1.txt" 2>&1
     echo "$1 $group: exit $? $(tail -1 "$out/$1.txt")")
  done
}
want() { case " ${PARTS:-ops train ncu check memcheck kernels racecheck profile} " in *" $1 "*) return 0 ;; esac; return 1; }
want ops && ops all $TEST_GROUPS
# NEW_PATHS: the environment switches of paths that wait for a GPU run to become the defaults
# (docs/cuda.md, "Switched off until a GPU run"), e.g. NEW_PATHS="HYLA_X=1 HYLA_Y=0"; with it,
# the op tests (NEW_PATHS_GROUPS, default all), laLTE's training, the sanitizers, the kernel
# timings and ncu run them switched on as well. Waiting now: HYLA_GDR_STATE3=1, HYLA_GDR_OUT3=1,
# HYLA_GDR_LOCAL2=1, HYLA_GDR_L2_FUSED=1, HYLA_GDR_OVERLAP=1 (never run on a GPU yet), HYLA_ATTN_LAZY_RESCALE=1 (checked, no gain
# measured): docs/cuda.md; unset or NEW_PATHS="" tests none.
new_paths=${NEW_PATHS-}
# (`export` of nothing would print the environment: with no paths, a harmless variable instead)
want ops && [ -n "$new_paths" ] && (export ${new_paths:-HYLA_NO_NEW_PATHS=1}; ops new-paths ${NEW_PATHS_GROUPS:-})
if [ "${FALLBACKS:-0}" = 1 ]; then # the paths the defaults replace
  HYLA_NSA_TILED=0 ops nsa-rows nsa
  HYLA_GDR_CHUNKED=0 ops gdr-recurrence gdr
  HYLA_ROUTER_TAPS=1 ops router-taps lte_router
  HYLA_GEMM_BF16_COPIES=0 ops no-copies linear lm_head_ce
  HYLA_ATTN_TWO_MTILES=0 ops one-mtile attention
fi
save
# laLTE also runs with all NEW_PATHS on, and with EACH_PATH=1 with each of them alone (what each
# gives); NEW_FOR_ALL=1: every model with all NEW_PATHS on as well.
want train && for mb in ${MODELS:-gdn_lte_0.4B:4 gdn_nsa_0.4B:4 gdn_0.4B:4 gdn_swa_0.4B:4 transformer_0.4B:4}; do
  train ${mb%%:*} ${mb##*:}
  [ -n "$new_paths" ] || continue
  if [ "${mb%%:*}" = gdn_lte_0.4B ] || [ "${NEW_FOR_ALL:-0}" = 1 ]; then
    (export ${new_paths:-HYLA_NO_NEW_PATHS=1}; TAG=-new-paths train ${mb%%:*} ${mb##*:})
  fi
  [ "${mb%%:*}" = gdn_lte_0.4B ] && [ "${EACH_PATH:-0}" = 1 ] && for path in $new_paths; do
    (export $path; TAG=-${path%%=*} train ${mb%%:*} ${mb##*:})
  done
done
save
# BASE=1: the same training runs and kernel timings with the baseline build too (gpu-carry-base.tgz
# from `gpu-check.sh pack-base REV`, carried beside gpu-carry.tgz), in this call, on this GPU
[ "${BASE:-0}" = 1 ] && mkdir -p base && { [ -d base/gpu-carry ] || tar xzf gpu-carry-base.tgz -C base; }
if [ "${BASE:-0}" = 1 ] && want train; then
  for mb in ${MODELS:-gdn_lte_0.4B:4 gdn_nsa_0.4B:4 gdn_0.4B:4 gdn_swa_0.4B:4 transformer_0.4B:4}; do
    CARRY=base/gpu-carry TAG=-base train ${mb%%:*} ${mb##*:}
  done
  save
fi
# every kernel of one training step of NCU_MODEL (default laLTE; B = 4, NEW_PATHS on) timed by Nsight
# Compute: where the step's time goes, cuBLAS's kernels included (ncu serialises the kernels
# and adds its own overhead per launch, so only the kernels' own durations count)
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
want ncu && (export ${new_paths:-HYLA_NO_NEW_PATHS=1}; timeout -s INT ${NCU_TIMEOUT:-150} "$ncu" --clock-control none --metrics gpu__time_duration.sum,launch__registers_per_thread,launch__shared_mem_per_block_dynamic,launch__shared_mem_per_block_static,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem \
    --print-kernel-base function --csv --page raw ./gpu-carry/hyla bench train gpu-carry/configs/models/${NCU_MODEL:-gdn_lte_0.4B}.yaml \
    --backend cuda --steps 1 --warmup 0 --set train.micro_batch=4 --set train.seq_len=4096 --set train.precision=bf16 \
    >"$out/ncu-${NCU_MODEL:-gdn_lte_0.4B}.csv" 2>&1
  echo "ncu ($ncu): exit $?"; python3 scripts/ncu-summary.py "$out/ncu-${NCU_MODEL:-gdn_lte_0.4B}.csv" 45 | tee "$out/ncu-summary.txt")
save
# one launch of each of NCU_KERNELS (KERNEL:bench-op pairs) under Nsight Compute's full set
# (throughputs, occupancy, warp stall reasons, memory chart): why a kernel takes what it takes.
# The report is kept (ncu-full-KERNEL.ncu-rep) and read twice: its details page (the sections)
# and its SASS page (every instruction with its executions and warp-stall samples, the place in
# the code where the warps wait; scripts/ncu-stalls.py sums it, scripts/ncu-lines.py maps it to
# the .cu file's lines). ncu's own CUDA page printed the file without metrics on the GPU host.
want ncu-kernels && for pair in ${NCU_KERNELS:-grads_dk2_kernel:gdr mma_dkdv2_kernel:attention mma_dq_kernel:attention bwd_kernel:lte_router}; do
  (export ${new_paths:-HYLA_NO_NEW_PATHS=1}; name=ncu-full-${pair%%:*}
   timeout -s INT ${NCU_KERNEL_TIMEOUT:-60} "$ncu" --set full --import-source no -k "regex:^${pair%%:*}$" -c 1 -f -o "$out/$name" \
     ./gpu-carry/hyla bench kernels --backend cuda --precision bf16 --only ${pair##*:} --seconds 0.01 >"$out/$name.log" 2>&1
   echo "ncu full ${pair%%:*}: exit $?"
   "$ncu" -i "$out/$name.ncu-rep" --csv --page details >"$out/$name.csv" 2>&1
   # (per line of the .cu files: scripts/ncu-lines.py on this page, on the development machine)
   "$ncu" -i "$out/$name.ncu-rep" --csv --page source --print-source sass >"$out/ncu-source-${pair%%:*}.csv" 2>&1
   echo "  $(wc -l <"$out/$name.csv") detail lines, $(wc -l <"$out/ncu-source-${pair%%:*}.csv") source lines")
done
save
want check && { SKIP_OPS=1 OUT=$out timeout ${RUN_TIMEOUT:-110} bash scripts/gpu-check.sh run >/dev/null 2>&1; grep -E "worst" "$out/gpu-check.txt"; }
save
want memcheck && (export ${new_paths:-HYLA_NO_NEW_PATHS=1}; sanitize memcheck ${MEMCHECK_TIMEOUT:-70})
save
want kernels && for only in ${KERNELS:-attention gdr lte_router nsa linear}; do
  for paths in "" ${new_paths:+"$new_paths"}; do
    env $paths timeout 40 ./gpu-carry/hyla bench kernels --backend cuda --precision bf16 --only $only --seconds 0.1 2>&1 |
      grep -E "fwd|bwd" | sed "s/^/${paths:+new paths: }/" | tee -a "$out/bench-kernels-bf16.txt"
  done
  [ "${BASE:-0}" = 1 ] && LD_LIBRARY_PATH=$PWD/base/gpu-carry/lib:/usr/local/cuda/lib64 timeout 40 \
    ./base/gpu-carry/hyla bench kernels --backend cuda --precision bf16 --only $only --seconds 0.1 2>&1 |
    grep -E "fwd|bwd" | sed "s/^/base: /" | tee -a "$out/bench-kernels-bf16.txt"
done
save
want racecheck && (export ${new_paths:-HYLA_NO_NEW_PATHS=1}; sanitize racecheck ${RACECHECK_TIMEOUT:-60})
save
# where the laLTE step goes, NEW_PATHS on (every op synchronised)
want profile && (export ${new_paths:-HYLA_NO_NEW_PATHS=1}; OUT=$out MODELS=${PROFILE_MODELS:-gdn_lte_0.4B:4} timeout 60 bash scripts/gpu-profile.sh | grep -A 24 "per-op")
save
