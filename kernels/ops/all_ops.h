/* Every op of the backend, one file per family. No include guard: this list is
 * expanded several times (CPU declarations per precision, the backend table).
 *
 * Conventions shared by all ops:
 * - Activations are row-major, token-major: [B, L, channels]; heads are [B, L, H, d].
 * - Forward functions write their outputs (=). Backward functions write the gradients
 *   of activations (=) and ADD into the gradients of parameters (+=), so that
 *   gradient accumulation over micro-batches is free. Exceptions are named.
 * - Shapes are int; offsets are computed in size_t.
 * - No op allocates in steady state except where it says so; scratch comes from the caller. */
#include "op_shapes.h"
#include "ops_basic.h"
#include "ops_gdn.h"
#include "ops_attention.h"
#include "ops_lte.h"
#include "ops_nsa.h"
