/* Learning-rate multiplier f(s) of MODEL.md §8 (torchtitan LambdaLR: linear warm-up, one
 * stable step, cosine to lr_min_ratio). s = 0 for the first optimizer step. */
#ifndef HYLA_LR_SCHEDULE_H
#define HYLA_LR_SCHEDULE_H

double lr_multiplier(int s, int warmup_steps, int total_steps, double lr_min_ratio);

#endif
