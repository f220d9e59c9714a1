// The one CUB call the kernels make (cub::DeviceRadixSort::SortPairs), for the CPU emulation:
// a stable sort of (key, value) pairs by key, as CUB's radix sort is, with CUB's two-call
// protocol (a NULL scratch pointer asks for the scratch size).
#ifndef HYLA_CUB_EMU_H
#define HYLA_CUB_EMU_H

#include <algorithm>
#include <numeric>
#include <vector>

namespace cub {
struct DeviceRadixSort {
    template <class K, class V>
    static int SortPairs(void *scratch, size_t &bytes, const K *keys_in, K *keys_out, const V *values_in,
                         V *values_out, int n) {
        if (!scratch) {
            bytes = 16;
            return 0;
        }
        std::vector<int> order(n);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return keys_in[a] < keys_in[b]; });
        for (int i = 0; i < n; i++) keys_out[i] = keys_in[order[i]], values_out[i] = values_in[order[i]];
        return 0;
    }
};
} // namespace cub

#endif
