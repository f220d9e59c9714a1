#!/usr/bin/env python3
"""Rewrites CUDA sources of kernels/cuda/ as C++ for the CPU emulation (emu.h), the one pass
every tests/gpu/emu/run_*.sh script uses:

  cuda_to_cpp.py SRC_DIR OUT_DIR [options] FILE[:DEST] ...

Always: the CUDA-only includes go (<cuda_bf16.h>, <cuda_pipeline.h>, <mma.h>, "cuda_check.h",
"backend_cuda.h"; emu.h stands in for them), dynamic shared memory becomes the block's buffer
(g_smem), static __shared__ arrays become static thread_local ones (one block at a time runs on
each OS thread), __align__(n) becomes alignas(n), kernel<<<grid, block[, smem]>>>(args) becomes
emu_launch(grid, block[, smem], [=]() { kernel(args); }), and the extern "C" cuda_register_*
functions (which need the whole backend) are dropped. DEST defaults to FILE with .cu -> .cpp.

Options (before the files):
  --replace OLD=>NEW  plain text replacement, done first (repeatable)
  --head TEXT         put before each rewritten .cu file (default: #include "emu.h")
  --cp-async          cp.async through cp_async_emu.h: copies land at the wait, NaN before
  --keep-register     keep the cuda_register_* functions
"""
import re
import sys

CUDA_INCLUDES = r'#include (<cuda_bf16.h>|<cuda_pipeline.h>|<mma.h>|"cuda_check.h"|"backend_cuda.h")\n'
LAUNCH = r"([\w:]+(?:<[^<>;()]*>)?)<<<(.*?)>>>\((.*?)\);"


def rewrite(s, replacements, cp_async, keep_register):
    for old, new in replacements:
        s = s.replace(old, new)
    s = re.sub(CUDA_INCLUDES, "", s)
    s = re.sub(r"extern __shared__ (?:__align__\(\d+\) )?([\w ]+?) (\w+)\[\];", r"\1 *\2 = (\1 *)g_smem;", s)
    s = re.sub(r"\b__shared__ ", "static thread_local ", s)
    s = re.sub(r"__align__\((\d+)\)", r"alignas(\1)", s)
    s = re.sub(LAUNCH, lambda m: f"emu_launch({m.group(2)}, [=]() {{ {m.group(1)}({m.group(3)}); }});", s,
               flags=re.S)
    if cp_async:
        for f in ["memcpy_async", "commit", "wait_prior"]:
            s = s.replace(f"__pipeline_{f}(", f"emu_cp_{f.replace('memcpy_', '')}(")
    if not keep_register:
        s = re.sub(r'extern "C" void cuda_register_\w+\(.*?\n}\n', "", s, flags=re.S)
    return s


def main(argv):
    src, out, args = argv[1], argv[2], argv[3:]
    replacements, head, cp_async, keep_register = [], '#include "emu.h"\n', False, False
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--replace":
            old, new = args.pop(0).split("=>", 1)
            replacements.append((old, new))
        elif opt == "--head":
            head = args.pop(0).replace("\\n", "\n")
            head += "" if head.endswith("\n") else "\n"
        elif opt == "--cp-async":
            cp_async = True
        elif opt == "--keep-register":
            keep_register = True
        else:
            sys.exit(f"cuda_to_cpp.py: unknown option {opt}")
    for item in args:
        name, _, dest = item.partition(":")
        dest = dest or (name[:-3] + ".cpp" if name.endswith(".cu") else name)
        s = rewrite(open(f"{src}/{name}").read(), replacements, cp_async, keep_register)
        if name.endswith(".cu"):
            s = head + s
        open(f"{out}/{dest}", "w").write(s)


if __name__ == "__main__":
    main(sys.argv)
