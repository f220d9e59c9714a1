/* Counter-based random numbers: a value is a pure function of (key, index), so any
 * element of any stream can be regenerated in any order, on any rank, after a resume.
 * A key is derived from (seed, purpose, step, rank); the index names the element.
 * The mixer is the splitmix64 finaliser applied to a keyed counter: cheap, stateless
 * and identical on the CPU and the GPU. */
#ifndef HYLA_RNG_H
#define HYLA_RNG_H

#include <stdint.h>

/* The generator also runs inside CUDA kernels (dropout masks regenerated on the GPU). */
#ifdef __CUDACC__
#define HYLA_HOST_DEVICE __host__ __device__
#else
#define HYLA_HOST_DEVICE
#endif

/* What a stream is for; part of the key so that streams never overlap. */
enum hyla_rng_purpose {
    HYLA_RNG_INIT = 1,     /* parameter initialisation */
    HYLA_RNG_DROPOUT = 2,  /* dropout masks */
    HYLA_RNG_DATA = 3,     /* data order and synthetic tasks */
    HYLA_RNG_TEST = 4,     /* test inputs */
};

HYLA_HOST_DEVICE static inline uint64_t hyla_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Key of one stream. */
HYLA_HOST_DEVICE static inline uint64_t hyla_rng_key(uint64_t seed, uint32_t purpose, uint64_t step, uint32_t rank) {
    uint64_t k = hyla_mix64(seed + 0x9e3779b97f4a7c15ULL);
    k = hyla_mix64(k ^ ((uint64_t)purpose << 32 | rank));
    return hyla_mix64(k ^ (step * 0xd1b54a32d192ed03ULL));
}

/* Derive a sub-key (for example one per layer) from a key. */
HYLA_HOST_DEVICE static inline uint64_t hyla_rng_subkey(uint64_t key, uint64_t sub) {
    return hyla_mix64(key ^ hyla_mix64(sub + 0x632be59bd9b4e019ULL));
}

/* Draw `index` of a stream is hyla_mix64 of its counter, key + (index + 1) HYLA_RNG_STEP: the
 * counter of index + 1 is index's plus HYLA_RNG_STEP, so a run of consecutive draws needs one
 * multiply (the GPU's LTE router draws a dropout mask four channels at a time that way). */
#define HYLA_RNG_STEP 0x9e3779b97f4a7c15ULL
HYLA_HOST_DEVICE static inline uint64_t hyla_rng_counter(uint64_t key, uint64_t index) {
    return key + (index + 1) * HYLA_RNG_STEP;
}
HYLA_HOST_DEVICE static inline uint64_t hyla_rng_u64(uint64_t key, uint64_t index) {
    return hyla_mix64(hyla_rng_counter(key, index));
}

/* Uniform in [0, 1) with 24 bits (exactly representable as float). */
HYLA_HOST_DEVICE static inline float hyla_rng_uniform(uint64_t key, uint64_t index) {
    return (float)(hyla_rng_u64(key, index) >> 40) * (1.0f / 16777216.0f);
}

/* Uniform in [0, 1) with 53 bits. */
HYLA_HOST_DEVICE static inline double hyla_rng_uniform_f64(uint64_t key, uint64_t index) {
    return (double)(hyla_rng_u64(key, index) >> 11) * (1.0 / 9007199254740992.0);
}

/* Standard normal by Box-Muller on two 53-bit uniforms derived from one index. */
double hyla_rng_normal(uint64_t key, uint64_t index);

#endif
