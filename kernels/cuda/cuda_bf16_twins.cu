// CUDA, inside the backend: fp32 arrays that have an exact bf16 twin (backend.h:
// know_bf16_twin), so that a product in bf16 mode reads an operand's twin instead of rounding
// the fp32 values into a copy of its own. FSDP gathers a unit's parameters in bf16 and widens
// them into the fp32 buffer the ops read; the gathered bf16 buffer is that buffer's twin, and
// every weight operand of every product lies in one: ~5 weight copies per layer forward and
// as many backward (4.5 to 7 us each at the 0.4B shape, ~2 ms a step), and the LM head's
// weight once per op (60 us). Same bits: rounding a value that is already bf16 gives it back.
// HYLA_BF16_TWINS=0 / 1 switches the lookup (TWINS_BY_DEFAULT: on since an H100 run passed).
// The same table keeps the activations the model holds (hold_bf16_copy, below): not exact in
// bf16, but their copies are what a product would round them to, so again the same bits.
#include <stdlib.h>

#include "backend_cuda.h"
#include "cuda_bf16_convert.cuh"
#include "cuda_check.h"
#include "cuda_switch.h"

namespace {

constexpr bool TWINS_BY_DEFAULT = true; // GPU-validated, H100 2026-12-07 (docs/gpu-runs/2026-12-07d-h100)
bool twins_wanted() {
    static const bool on = cuda_switch("HYLA_BF16_TWINS", TWINS_BY_DEFAULT);
    return on;
}

// Held copies (hold_bf16_copy): an activation saved for the backward pass, rounded once when
// its producer has written it, read by the products of the forward and the backward ops that
// take it (a layer's norm outputs, attention's q, k, v and output: ~110 roundings a laLTE step
// fewer). The copy is the backend's (stream-ordered memory), freed when forgotten.
// HYLA_HOLD_COPIES=0 / 1 switches holding (HOLD_BY_DEFAULT: on since an H100 run, 2026-12-07:
// laLTE 73.5k -> 75.1k tokens/s alone, the tiny models within their bounds).
constexpr bool HOLD_BY_DEFAULT = true;
bool hold_wanted() {
    static const bool on = cuda_switch("HYLA_HOLD_COPIES", HOLD_BY_DEFAULT);
    return on;
}

// Copies written at the source (expect_bf16_copy): the op that produces a held array writes its
// bf16 copy as it writes the fp32 values (RMSNorm's outputs, the residual's gradient, RoPE's q
// and k, the gated norm's output), so the hold has nothing to round: a copy pass reads 4 bytes
// and writes 2 per value (~29 us for [16384 x 1024] on an H100, ~200 of them a laLTE step), the
// producer writes 2 more. HYLA_COPIES_AT_SOURCE=0 / 1; on by default since its H100 run
// (2026-12-07 ~22:25, docs/gpu-runs/2026-12-07l-h100: laLTE 191.3 -> 186.7 ms a step alone, the
// same loss bits; 302 copy passes a step -> 86).
constexpr bool AT_SOURCE_BY_DEFAULT = true;
bool at_source_wanted() {
    static const bool on = cuda_switch("HYLA_COPIES_AT_SOURCE", AT_SOURCE_BY_DEFAULT);
    return on;
}

// FSDP's units gathered at a time (the current one, the prefetched next, the final norm and
// the tied embedding) and the held activations of every layer (~6 a layer): a twin that does
// not fit is simply not used.
constexpr int MAX_TWINS = 512;
// A held copy's life: expect_bf16_copy makes it EXPECTED (its producer op has not run: no
// product may read it), the producer's kernel writes it beside its fp32 output (WRITTEN:
// cuda_bf16_copy_target), hold_bf16_copy makes it READY (rounding it there unless WRITTEN).
enum twin_state { READY, EXPECTED, WRITTEN };
struct twin {
    const float *full;
    const __nv_bfloat16 *h;
    size_t count;
    __nv_bfloat16 *owned; // a held copy (freed when forgotten); NULL: the caller's
    twin_state state;
};
twin twins[MAX_TWINS];
int n_twins = 0;
unsigned long copies_at_source = 0; // copies handed to producers (hyla_cuda_copies_at_source)

int know_bf16_twin(const float *full, const uint16_t *h, size_t count) {
    if (!twins_wanted() || n_twins == MAX_TWINS) return 0;
    twins[n_twins++] = twin{full, (const __nv_bfloat16 *)h, count, nullptr, READY};
    return 1;
}
void forget_bf16_twin(const float *full) {
    for (int i = 0; i < n_twins; i++)
        if (twins[i].full == full) {
            if (twins[i].owned) CUDA_CHECK(cudaFreeAsync(twins[i].owned, 0)); // after the products queued
            twins[i] = twins[--n_twins];
            return;
        }
}
bool copies_held() { return hold_wanted() && twins_wanted() && cuda_matmul_bf16(); }
// The held copy of full[0 .. count): the one it had (a step ago: the same buffer again) or a
// new one; nullptr where the table is full.
twin *held_copy_of(const float *full, size_t count) {
    for (int i = 0; i < n_twins; i++)
        if (twins[i].full == full && twins[i].owned && twins[i].count == count) return &twins[i];
    forget_bf16_twin(full);
    if (n_twins == MAX_TWINS) return nullptr;
    __nv_bfloat16 *h = nullptr;
    CUDA_CHECK(cudaMallocAsync((void **)&h, count * sizeof(__nv_bfloat16), 0));
    twins[n_twins] = twin{full, h, count, h, EXPECTED};
    return &twins[n_twins++];
}
void expect_bf16_copy(const float *full, size_t count) {
    if (!at_source_wanted() || !copies_held() || count == 0) return;
    if (twin *t = held_copy_of(full, count)) t->state = EXPECTED;
}
void hold_bf16_copy(const float *full, size_t count) {
    if (!copies_held() || count == 0) return;
    twin *t = held_copy_of(full, count);
    if (!t) return;
    if (t->state != WRITTEN) cuda_to_bf16(t->owned, full, count); // no producer wrote it: round here
    t->state = READY;
}

} // namespace

const __nv_bfloat16 *cuda_bf16_twin_of(const float *src, size_t extent) {
    for (int i = 0; i < n_twins; i++) {
        const twin &t = twins[i];
        if (t.state == READY && src >= t.full && src + extent <= t.full + t.count) return t.h + (src - t.full);
    }
    return nullptr;
}

__nv_bfloat16 *cuda_bf16_copy_target(const float *out, size_t count) {
    for (int i = 0; i < n_twins; i++) {
        twin &t = twins[i];
        if (t.state == EXPECTED && t.full == out && t.count == count) {
            t.state = WRITTEN, copies_at_source++;
            return t.owned;
        }
    }
    return nullptr;
}

void cuda_forget_bf16_twins_at(const void *allocation) {
    const float *full = (const float *)allocation;
    for (int i = 0; i < n_twins; i++)
        if (twins[i].full == full) forget_bf16_twin(full), i = -1; // (every one: start over)
}

extern "C" unsigned long hyla_cuda_copies_at_source(void) { return copies_at_source; }
extern "C" int hyla_cuda_copies_at_source_on(void) { return at_source_wanted(); }

extern "C" void cuda_register_bf16_twins(struct hyla_backend *t) {
    t->know_bf16_twin = know_bf16_twin, t->forget_bf16_twin = forget_bf16_twin, t->hold_bf16_copy = hold_bf16_copy;
    t->expect_bf16_copy = expect_bf16_copy;
}
