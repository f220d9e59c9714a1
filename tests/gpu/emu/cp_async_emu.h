// cp.async (cuda_pipeline.h's __pipeline_memcpy_async / _commit / _wait_prior) with the
// hardware's freedom made visible: emu.h copies at issue, which hides a read that comes before
// the wait (or before the barrier that follows it). Here, the destination turns to NaN bytes
// at issue and the copy lands only when __pipeline_wait_prior releases its group: whoever
// reads the destination in between (this thread before its wait, another thread before the
// barrier after it, or a warp still reading a buffer that is being refilled) reads NaN.
// run_attn.sh renames the kernels' calls to these (emu.h keeps the plain versions).
#pragma once
#include "emu.h"

struct emu_cp {
    void *dst;
    unsigned char src[16]; // the source as at issue (cp.async moves 4, 8 or 16 bytes)
    size_t n;
    uint3v block; // the block that issued it: none may be left pending into the next block
};
struct emu_cp_thread {
    std::vector<emu_cp> pending;   // issued, oldest first
    std::vector<size_t> group_len; // committed groups among them, oldest first
};
inline thread_local emu_cp_thread emu_cp_state[1024]; // per CUDA thread (one block at a time per OS thread)

inline void emu_cp_async(void *dst, const void *src, size_t n) {
    if (n != 4 && n != 8 && n != 16) { fprintf(stderr, "emu: cp.async of %zu bytes\n", n); abort(); }
    emu_cp c{dst, {}, n, blockIdx};
    memcpy(c.src, src, n);
    memset(dst, 0xff, n); // undefined until the wait: NaN
    emu_cp_state[threadIdx.x].pending.push_back(c);
}
inline void emu_cp_commit() {
    emu_cp_thread &t = emu_cp_state[threadIdx.x];
    size_t in_groups = 0;
    for (size_t len : t.group_len) in_groups += len;
    t.group_len.push_back(t.pending.size() - in_groups);
}
// Every committed group but the newest `newest` has landed.
inline void emu_cp_wait_prior(int newest) {
    emu_cp_thread &t = emu_cp_state[threadIdx.x];
    size_t done = 0;
    while (t.group_len.size() > (size_t)std::max(newest, 0)) {
        done += t.group_len.front();
        t.group_len.erase(t.group_len.begin());
    }
    for (size_t i = 0; i < done; i++) {
        const emu_cp &c = t.pending[i];
        if (c.block.x != blockIdx.x || c.block.y != blockIdx.y || c.block.z != blockIdx.z) {
            fprintf(stderr, "emu: thread %u: a cp.async copy of an earlier block was never waited for\n", threadIdx.x);
            abort();
        }
        memcpy(c.dst, c.src, c.n);
    }
    t.pending.erase(t.pending.begin(), t.pending.begin() + done);
}
