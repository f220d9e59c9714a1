// What the tiled attention kernels share (cuda_flash_attention.cu in fp32 on the CUDA cores,
// cuda_flash_attention_bf16.cu on the tensor cores): the problem's shape with LTE's
// compacted selected keys, key visibility per segment, and which key tiles a query tile reads.
#ifndef HYLA_CUDA_FLASH_COMMON_CUH
#define HYLA_CUDA_FLASH_COMMON_CUH

#include <stdint.h>

namespace flash {

constexpr int TILE = 64; // queries and keys per tile

struct flash_shape {
    int B, L, Hq, Hkv, d, wl;
    float scale;
    const int *list;   // [B * Hkv, L] selected positions, sorted; NULL: no segment B
    const int *count;  // [B * Hkv] list lengths
};

// Key visibility per segment (t: query position, j: key position; j < 0: empty slot).
__device__ inline bool visible_a(int t, int j, int wl) { return j >= 0 && j <= t && (wl < 0 || t - j <= wl); }
__device__ inline bool visible_b(int t, int j, int wl) { return j >= 0 && t - j > wl; }

// Number of list entries with position <= last (the list is sorted).
__device__ inline int entries_up_to(const int *list, int n, int last) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (list[mid] <= last) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

// The key tiles of query tile [t0, t1]: segment A's positions, then segment B's entries.
struct key_tiles {
    int a0, a_tiles, b_entries, b_tiles;
};
__device__ inline key_tiles keys_of_query_tile(const flash_shape &s, int bk, int t0, int t1) {
    key_tiles k;
    k.a0 = s.wl < 0 ? 0 : max(0, t0 - s.wl);
    k.a_tiles = (t1 - k.a0 + TILE) / TILE;
    k.b_entries = 0;
    if (s.list && s.wl >= 0 && t1 - s.wl - 1 >= 0)
        k.b_entries = entries_up_to(s.list + (size_t)bk * s.L, s.count[bk], t1 - s.wl - 1);
    k.b_tiles = (k.b_entries + TILE - 1) / TILE;
    return k;
}
// Position of slot kk of key tile `tile` (segment A tiles first); -1 for an empty slot.
__device__ inline int key_position(const flash_shape &s, const key_tiles &k, int bk, int t1, int tile, int kk) {
    if (tile < k.a_tiles) {
        const int j = k.a0 + tile * TILE + kk;
        return j <= t1 ? j : -1;
    }
    const int n = (tile - k.a_tiles) * TILE + kk;
    return n < k.b_entries ? s.list[(size_t)bk * s.L + n] : -1;
}


// The keys of a dk / dv kernel's block (the blockIdx.x-th 64 of (batch, kv head) bk):
// selected_pass 0, window positions; 1, the list's entries. Threads 0..63 write kpos; returns
// how many keys there are (0: none, the block leaves) and the first query that sees them.
__device__ inline int dkdv_block_keys(const flash_shape &s, int bk, int selected_pass, int *kpos, int *first_query) {
    if (!selected_pass) {
        const int j0 = blockIdx.x * TILE, n = min(TILE, s.L - j0);
        if (threadIdx.x < TILE) kpos[threadIdx.x] = (int)threadIdx.x < n ? j0 + (int)threadIdx.x : -1;
        *first_query = j0;
        return n;
    }
    const int n0 = blockIdx.x * TILE, count = s.count[bk];
    if (n0 >= count) return 0;
    const int n = min(TILE, count - n0);
    const int *list = s.list + (size_t)bk * s.L + n0;
    if (threadIdx.x < TILE) kpos[threadIdx.x] = (int)threadIdx.x < n ? list[threadIdx.x] : -1;
    *first_query = list[0] + s.wl + 1; // the earliest query past the window
    return n;
}
// The last query that sees a dk / dv block whose last key is last_key.
__device__ inline int dkdv_last_query(const flash_shape &s, int selected_pass, int last_key) {
    return (selected_pass || s.wl < 0) ? s.L - 1 : min(s.L - 1, last_key + s.wl);
}

// The tensor-core kernels (train.precision = bf16, head dims 64 and 128): the same contract
// as the fp32 ones; delta[row] = <dO, O>.
bool bf16_supported(int d);
void bf16_fwd(float *o, float *lse, const float *q, const float *k, const float *v, const flash_shape &s);
void bf16_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
              const float *lse, const float *delta, const flash_shape &s);

} // namespace flash

#endif
