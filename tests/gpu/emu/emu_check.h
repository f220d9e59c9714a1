// What the emulation tests (*_emu.cpp) share: fresh random inputs from a fixed generator (runs
// repeat exactly), NaN-filled outputs (what a kernel must write), and the norm-based relative
// error that test_cuda_ops reports.
#pragma once
#include <cmath>
#include <vector>

inline unsigned long long emu_rng_state = 1;
inline float rnd(float lo, float hi) {
    emu_rng_state = emu_rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * ((emu_rng_state >> 40) / 16777216.0f);
}
inline std::vector<float> rv(size_t n, float lo = -1, float hi = 1) {
    std::vector<float> v(n);
    for (auto &x : v) x = rnd(lo, hi);
    return v;
}
inline std::vector<float> nans(size_t n) { return std::vector<float>(n, NAN); }
// sqrt(sum (got - want)^2 / sum want^2); the absolute norm where want is all zeros.
inline double rel(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)got[i] - want[i];
        num += d * d, den += (double)want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
inline double rel(const std::vector<float> &got, const std::vector<float> &want) {
    return rel(got.data(), want.data(), got.size());
}
