/* The model interpreter of the insitu runtime: runs a model blob (insitu.soc.modelblob) layer by layer,
 * bit-exact with the integer golden model (insitu.golden.network.forward_int). */
#ifndef INSITU_INTERP_H
#define INSITU_INTERP_H

#include <stddef.h>
#include <stdint.h>
#include "modelblob.h"    /* generated from insitu.soc.modelblob: the blob's layout */

#define INTERP_MAX_LAYERS 128

/* The methods compiled in: bit n for blob method code n (insitu.soc.runtime.build_runtime's `methods`).
 * A model using another is refused with STATUS_UNSUPPORTED; leaving decoders out keeps the code small. */
#ifndef RUNTIME_METHODS_MASK
#define RUNTIME_METHODS_MASK 0xffu
#endif
#define RUNTIME_HAS(method) ((RUNTIME_METHODS_MASK >> (method)) & 1u)

struct model_info {
    const uint32_t *blob;
    uint32_t layers, input_bytes, outputs, max_activation;
    uint32_t accelerated;                       /* layers bound to a peripheral */
    uint8_t peripheral[INTERP_MAX_LAYERS];      /* per layer: the peripheral's index, or ACCEL_NONE */
};

/* Check a blob of len bytes (4-byte aligned) against the arena's size. Returns a STATUS_ code. */
int interp_check(const uint32_t *blob, size_t len, size_t arena_bytes, struct model_info *info);

/* Bind each layer that matches a free peripheral to it and load its weights there. */
void interp_bind(struct model_info *m);

/* Run one image (input_bytes int8 values, C × H × W) through the model; scores receives the outputs.
 * The arena holds two activation buffers of max_activation int32 each, then scratch_words (the blob's header)
 * of working memory for compressed layers. With accelerate, bound layers run
 * on their peripherals. layer_cycles (NULL: not wanted) receives each layer's clock cycles. Returns the
 * number of peripheral errors. */
int interp_run(const struct model_info *m, const int8_t *image, int32_t *arena, int32_t *scores,
               int accelerate, uint32_t *layer_cycles);

#endif
