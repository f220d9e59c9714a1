#!/usr/bin/env python3
"""Per-kernel totals from Nsight Compute's raw CSV (`ncu --csv --page raw --metrics
gpu__time_duration.sum[,launch__...]`): one line per kernel function, largest total first,
with its launch count, mean duration and share of all kernel time, and, when the CSV has
them, the first launch's registers per thread, shared memory per block (KB, dynamic +
static) and the blocks per SM that its registers and shared memory allow (occupancy
limits). `hyla bench train` measures the GPU's bf16 product rate (for MFU) after its steps:
the trailing run of one kernel's launches that this leaves at the end of the file is left out
and named. Usage: ncu-summary.py FILE [TOP]."""
import csv
import sys
from collections import defaultdict


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own log lines are not CSV
    units, launches = {}, []
    for row in csv.DictReader(lines):
        if not row.get("ID"):  # the units row: bytes or Kbytes, per column
            units = row
            continue
        try:
            ns = float(row["gpu__time_duration.sum"].replace(",", ""))
        except (KeyError, ValueError):
            continue  # the units row
        launches.append((row.get("Kernel Name", "?"), ns, row))
    # the rate measurement's products: the last launches, all of one kernel (a step ends with
    # the optimizer's kernels, never with a run of products)
    tail = 0
    while tail < len(launches) and launches[-1 - tail][0] == launches[-1][0]:
        tail += 1
    if tail >= 4 and tail < len(launches):
        left = launches[-tail:]
        launches = launches[:-tail]
        print(f"left out: the last {tail} launches, {sum(ns for _, ns, _ in left) / 1e6:.2f} ms of "
              f"{left[0][0][:60]} (the bf16 rate measurement after the step)")
    totals, counts, launch = defaultdict(float), defaultdict(int), {}
    for name, ns, row in launches:
        totals[name] += ns
        counts[name] += 1
        if name not in launch:
            launch[name] = launch_stats(row, units)
    grand = sum(totals.values())
    if not grand:
        sys.exit(f"{path}: no kernel durations found (did ncu run? see the file)")
    print(f"{sum(counts.values())} kernels, {grand / 1e6:.2f} ms of kernel time")
    print(f"{'ms total':>9} {'calls':>6} {'us/call':>9} {'share':>6} {'regs smemKB blk/SM(reg,smem)':>30}  kernel")
    for name, ns in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{ns / 1e6:9.2f} {counts[name]:6d} {ns / 1e3 / counts[name]:9.1f} {100 * ns / grand:5.1f}% "
              f"{launch[name]:>30}  {name[:80]}")


SCALE = {"byte": 1, "Kbyte": 1e3, "KByte": 1024, "Mbyte": 1e6}


def launch_stats(row, units):
    """Registers, shared memory and occupancy limits of one launch, where the CSV has them."""
    def num(key):
        try:
            return float(row[key].replace(",", "")) * SCALE.get(units.get(key, ""), 1)
        except (KeyError, ValueError):
            return None
    regs = num("launch__registers_per_thread")
    dyn, stat = num("launch__shared_mem_per_block_dynamic"), num("launch__shared_mem_per_block_static")
    lim_r, lim_s = num("launch__occupancy_limit_registers"), num("launch__occupancy_limit_shared_mem")
    if regs is None:
        return "-"
    smem = ((dyn or 0) + (stat or 0)) / 1024
    fmt = lambda x: "-" if x is None else f"{x:g}"
    return f"{fmt(regs)} {smem:.1f} ({fmt(lim_r)},{fmt(lim_s)})"


if __name__ == "__main__":
    main()
