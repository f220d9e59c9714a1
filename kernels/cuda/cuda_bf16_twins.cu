// CUDA, inside the backend: fp32 arrays that have an exact bf16 twin (backend.h:
// know_bf16_twin), so that a product in bf16 mode reads an operand's twin instead of rounding
// the fp32 values into a copy of its own. FSDP gathers a unit's parameters in bf16 and widens
// them into the fp32 buffer the ops read; the gathered bf16 buffer is that buffer's twin, and
// every weight operand of every product lies in one: ~5 weight copies per layer forward and
// as many backward (4.5 to 7 us each at the 0.4B shape, ~2 ms a step), and the LM head's
// weight once per op (60 us). Same bits: rounding a value that is already bf16 gives it back.
// HYLA_BF16_TWINS=0 / 1 switches the lookup (TWINS_BY_DEFAULT: on since an H100 run passed).
#include <stdlib.h>

#include "cuda_products.cuh"

namespace {

constexpr bool TWINS_BY_DEFAULT = true; // GPU-validated, H100 2026-12-07 (docs/gpu-runs/2026-12-07d-h100)
bool twins_wanted() {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("HYLA_BF16_TWINS");
        on = e && *e ? atoi(e) != 0 : TWINS_BY_DEFAULT;
    }
    return on;
}

// A few units are gathered at a time (the current one, the prefetched next, the final norm and
// the tied embedding): a small table; a twin that does not fit is simply not used.
constexpr int MAX_TWINS = 64;
struct twin {
    const float *full;
    const __nv_bfloat16 *h;
    size_t count;
};
twin twins[MAX_TWINS];
int n_twins = 0;

int know_bf16_twin(const float *full, const uint16_t *h, size_t count) {
    if (!twins_wanted() || n_twins == MAX_TWINS) return 0;
    twins[n_twins++] = twin{full, (const __nv_bfloat16 *)h, count};
    return 1;
}
void forget_bf16_twin(const float *full) {
    for (int i = 0; i < n_twins; i++)
        if (twins[i].full == full) {
            twins[i] = twins[--n_twins];
            return;
        }
}

} // namespace

namespace products {

const __nv_bfloat16 *bf16_twin_of(const float *src, size_t extent) {
    for (int i = 0; i < n_twins; i++) {
        const twin &t = twins[i];
        if (src >= t.full && src + extent <= t.full + t.count) return t.h + (src - t.full);
    }
    return nullptr;
}

} // namespace products

extern "C" void cuda_register_bf16_twins(struct hyla_backend *t) {
    t->know_bf16_twin = know_bf16_twin, t->forget_bf16_twin = forget_bf16_twin;
}
