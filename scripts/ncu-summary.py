#!/usr/bin/env python3
"""Per-kernel totals from Nsight Compute's raw CSV (`ncu --csv --page raw --metrics
gpu__time_duration.sum`): one line per kernel function, largest total first, with its
launch count, mean duration and share of all kernel time. Usage: ncu-summary.py FILE [TOP]."""
import csv
import sys
from collections import defaultdict


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own log lines are not CSV
    totals, counts = defaultdict(float), defaultdict(int)
    for row in csv.DictReader(lines):
        try:
            ns = float(row["gpu__time_duration.sum"].replace(",", ""))
        except (KeyError, ValueError):
            continue  # the units row
        name = row.get("Kernel Name", "?")
        totals[name] += ns
        counts[name] += 1
    grand = sum(totals.values())
    if not grand:
        sys.exit(f"{path}: no kernel durations found (did ncu run? see the file)")
    print(f"{sum(counts.values())} kernels, {grand / 1e6:.2f} ms of kernel time")
    print(f"{'ms total':>9} {'calls':>6} {'us/call':>9} {'share':>6}  kernel")
    for name, ns in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{ns / 1e6:9.2f} {counts[name]:6d} {ns / 1e3 / counts[name]:9.1f} {100 * ns / grand:5.1f}%  {name[:90]}")


if __name__ == "__main__":
    main()
