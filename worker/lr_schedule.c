#include "lr_schedule.h"

#include <math.h>

double lr_multiplier(int s, int warmup_steps, int total_steps, double lr_min_ratio) {
    if (s < warmup_steps) return (double)(s + 1) / warmup_steps;
    if (s == warmup_steps || total_steps <= warmup_steps) return 1.0;
    double progress = (double)(s - warmup_steps) / (double)(total_steps - warmup_steps);
    if (progress > 1.0) progress = 1.0;
    return lr_min_ratio + (1.0 - lr_min_ratio) * 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
}
