#!/usr/bin/env python3
"""Where a kernel's instructions and stalls come from, line by line of its .cu file: the SASS
page of an Nsight Compute report (gpu-session.sh PARTS=ncu-kernels writes
ncu-source-KERNEL.csv: each instruction's executions and warp-stall samples, by address)
mapped to source lines through the line table of the same code compiled here.

Nsight Compute's own CUDA page needs the report's host to resolve the lines; this machine has
no ncu, but it has the same nvcc, and -lineinfo does not change the code: the file is compiled
to a cubin with the build's flags, the kernel's .text section is the one with as many
instructions as the page (checked), and its sequence of `readelf --debug-dump=decodedline`
(sequences come in the order of the .text sections) gives each address its innermost line.
Usage: ncu-lines.py ncu-source-KERNEL.csv kernels/cuda/FILE.cu [TOP]"""
import bisect
import collections
import csv
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = ["/usr/local/cuda/bin/nvcc", "-std=c++17", "-O3", "-lineinfo", "-gencode", "arch=compute_90a,code=sm_90a",
        "-I", "kernels/cuda", "-I", ".", "-I", "kernels", "-cubin"]


def sass_page(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    at = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    col = {name: i for i, name in enumerate(rows[at])}
    body = [r for r in rows[at + 1:] if len(r) == len(rows[at])]
    kernel = next((r[1] for r in rows[:at] if r and r[0] == "Kernel Name"), "")
    count = lambda r, name: int(r[col[name]] or 0)
    return kernel, [(int(r[0], 16), count(r, "Instructions Executed"),
                     count(r, "Warp Stall Sampling (All Samples)")) for r in body]


def line_sequences(cubin):
    """The decoded line table's sequences: lists of (address, file, line), in section order."""
    out = subprocess.run(["readelf", "--debug-dump=decodedline", cubin], capture_output=True, text=True).stdout
    seqs, cur, last = [], [], -1
    for text in out.splitlines():
        m = re.match(r"(\S+)\s+(\d+)\s+(0x[0-9a-f]+|0)\s", text)
        if not m:
            continue
        entry = (int(m.group(3), 16), m.group(1), int(m.group(2)))
        if cur and entry[0] <= last and entry[0] == 0:
            seqs.append(cur)
            cur = []
        cur.append(entry)
        last = entry[0]
    return seqs + [cur] if cur else seqs


def text_sections(cubin):
    """The .text sections' (name, size) in section-header order."""
    out = subprocess.run(["readelf", "-S", "-W", cubin], capture_output=True, text=True).stdout
    found = re.findall(r"\]\s+\.text\.(\S+)\s+PROGBITS\s+\S+\s+\S+\s+([0-9a-f]+)", out)
    return [(name, int(size, 16)) for name, size in found]


def main():
    page, source = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    kernel, instructions = sass_page(page)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        subprocess.run(NVCC + [source, "-o", cubin], cwd=ROOT, check=True)
        sections, seqs = text_sections(cubin), line_sequences(cubin)
    short = re.sub(r"\(.*", "", kernel).split("::")[-1].split("<")[0].replace("void ", "").strip()
    match = [i for i, (name, size) in enumerate(sections) if size == 16 * len(instructions) and short in name]
    if len(match) != 1 or len(seqs) != len(sections):
        sys.exit(f"ncu-lines: {len(match)} sections of {len(instructions)} instructions named like {short!r} "
                 f"({len(sections)} sections, {len(seqs)} line sequences): not the same code? Build the commit the "
                 "report was taken of.")
    seq = seqs[match[0]]
    starts = [a for a, _, _ in seq]
    base = instructions[0][0]
    executed, stalls = collections.Counter(), collections.Counter()
    for address, n, samples in instructions:
        i = bisect.bisect_right(starts, address - base) - 1
        key = seq[max(i, 0)][1:]
        executed[key] += n
        stalls[key] += samples
    total_n, total_s = max(sum(executed.values()), 1), max(sum(stalls.values()), 1)
    texts = {}

    def text(key):
        name, line = key
        if name not in texts:
            paths = [os.path.join(ROOT, d, name) for d in ("kernels/cuda", "common", "kernels/ops", "kernels")]
            path = next((p for p in paths if os.path.exists(p)), None)
            texts[name] = open(path).read().split("\n") if path else []
        lines = texts[name]
        return lines[line - 1].strip()[:84] if 0 < line <= len(lines) else ""

    print(f"{kernel[:100]}: {len(instructions)} instructions, {total_n} executed, {total_s} stall samples")
    for title, counter in (("executed instructions", executed), ("stall samples", stalls)):
        print(f"top {top} lines by {title} (file:line  executed share  samples share  source):")
        for key, _ in counter.most_common(top):
            print(f"  {key[0][:24]:>24}:{key[1]:<5} {100.0 * executed[key] / total_n:5.1f}% "
                  f"{100.0 * stalls[key] / total_s:5.1f}%  {text(key)}")


if __name__ == "__main__":
    main()
