#!/usr/bin/env python3
"""Where a kernel's warps wait and what they execute: the source page of an Nsight Compute
report (gpu-session.sh PARTS=ncu-kernels writes ncu-source-KERNEL.csv: every SASS instruction
with its executions and warp-stall samples) summed by stall reason, then by opcode (the
instruction mix: how many of the executed instructions are the products'), then the
instructions with the most samples and the reasons they waited for (by source line:
scripts/ncu-lines.py). Usage: ncu-stalls.py ncu-source-KERNEL.csv [TOP]"""
import collections
import csv
import sys


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f)]
    header_at = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    header, body = rows[header_at], [r for r in rows[header_at + 1:] if len(r) == len(rows[header_at])]
    col = {name: i for i, name in enumerate(header)}
    reasons = [h for h in header if h.startswith("stall_") and not h.endswith("(Not Issued)")]
    samples = lambda r: int(r[col["Warp Stall Sampling (All Samples)"]] or 0)
    total = sum(samples(r) for r in body)
    executed = sum(int(r[col["Instructions Executed"]] or 0) for r in body)
    print(f"{len(body)} instructions, {executed} warp instructions executed, {total} stall samples")
    by_reason = {h: sum(int(r[col[h]] or 0) for r in body) for h in reasons}
    for h, n in sorted(by_reason.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {h[6:]:<18} {n:>9} {100.0 * n / max(total, 1):5.1f}%")
    by_opcode, stalls_of = collections.Counter(), collections.Counter()
    for r in body:
        words = r[col["Source"]].split()
        if not words:
            continue
        opcode = (words[1] if words[0].startswith("@") and len(words) > 1 else words[0]).split(".")[0]
        by_opcode[opcode] += int(r[col["Instructions Executed"]] or 0)
        stalls_of[opcode] += samples(r)
    print("instruction mix (warp instructions executed, share, stall samples):")
    for opcode, n in by_opcode.most_common(top):
        print(f"  {opcode:<10} {n:>12} {100.0 * n / max(executed, 1):5.1f}%  {stalls_of[opcode]:>8}")
    print(f"top {top} instructions by samples (index: position in the kernel's SASS):")
    for i, r in sorted(enumerate(body), key=lambda ir: -samples(ir[1]))[:top]:
        why = sorted(((int(r[col[h]] or 0), h[6:]) for h in reasons), reverse=True)[:3]
        print(f"  {i:>6} {samples(r):>7} {100.0 * samples(r) / max(total, 1):5.1f}%  {r[col['Source']].strip()[:60]:<60} "
              + ", ".join(f"{w} {n}" for n, w in why if n))


if __name__ == "__main__":
    main()
