# forward tiles and backward tiles of the LTE router, timed by the kernel bench
export LD_LIBRARY_PATH=$PWD/gpu-carry/lib:/usr/local/cuda/lib64
for R in 0 64 256 512; do echo "fwd rows $R: $(HYLA_ROUTER_FWD_ROWS=$R timeout 30 ./gpu-carry/hyla bench kernels --backend cuda --precision bf16 --only lte_router --seconds 0.1 2>&1 | grep -E 'fwd' | tr -s ' ' | tr '\n' ';')"; done
for T in 32 96 128 192 256; do echo "bwd T $T: $(HYLA_ROUTER_BWD_T=$T timeout 30 ./gpu-carry/hyla bench kernels --backend cuda --precision bf16 --only lte_router --seconds 0.1 2>&1 | grep -E 'fwd' | tr -s ' ' | tr '\n' ';')"; done
