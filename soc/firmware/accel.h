/* The runtime's drivers of the accelerator peripherals listed in peripherals.h (generated from the SoC):
 * a layer whose method and shape match a peripheral runs on it; the others run in software. */
#ifndef INSITU_ACCEL_H
#define INSITU_ACCEL_H

#include <stdint.h>
#include "modelblob.h"
#include "peripherals.h"

#define ACCEL_NONE 0xff

/* The peripheral (index) that can run layer l, not taken in `taken` (a bit per peripheral), or ACCEL_NONE. */
uint8_t accel_match(const struct blob_layer *l, uint32_t taken);

/* Write the layer's weights (in the blob at base) into peripheral p, set raw accumulator output. */
void accel_load(uint8_t p, const struct blob_layer *l, const uint8_t *base);

/* Run the layer on peripheral p: x holds its int8 input (as int32, C × H × W), y receives the
 * accumulators (C × H × W). Returns 0, or 1 when the peripheral flagged an error. */
int accel_run(uint8_t p, const struct blob_layer *l, const int32_t *x, int32_t *y);

#endif
