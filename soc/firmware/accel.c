/* Drivers of the convolution (ConvAccel with QGP or int8 weights) and dense (DenseAccel) peripherals. */
#include "runtime.h"
#include "accel.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

uint8_t accel_match(const struct blob_layer *l, uint32_t taken) {
    for (uint32_t i = 0; i < PERIPH_COUNT && i < 32; i++) {
        const struct periph *p = &PERIPHERALS[i];
        if (taken & (1u << i) || p->method != l->method)
            continue;
        if (l->kind == KIND_CONV2D && p->kind == PERIPH_CONV && p->k == l->k && l->padding == l->k / 2 &&
                l->stride == 1 && p->c_in == l->c_in && p->c_out == l->c_out && p->width == l->w_in &&
                p->height == l->h_in)
            return (uint8_t)i;
        if (l->kind == KIND_LINEAR && p->kind == PERIPH_DENSE && p->c_in == l->c_in && p->c_out == l->c_out)
            return (uint8_t)i;
    }
    return ACCEL_NONE;
}

void accel_load(uint8_t index, const struct blob_layer *l, const uint8_t *base) {
    const struct periph *p = &PERIPHERALS[index];
    const uint8_t *w = base + l->w_off;
    REG(p->out_cfg) = 0;                                     /* raw accumulators, one per word */
    if (p->kind == PERIPH_CONV) {
        REG(p->ctrl) = CONV_CTRL_CLEAR_MASK;
        /* per output channel: its codes (QGP, one per input channel) or int8 weights (input channel-major,
         * taps row-major), then commit as lane o % parallel of group o / parallel */
        uint32_t per_channel = l->method == METHOD_QGP ? l->c_in : l->c_in * l->k * l->k;
        for (uint32_t o = 0, group = 0, lane = 0; o < l->c_out; o++) {
            for (uint32_t i = 0; i < per_channel; i++)
                REG(p->w_a) = *w++;
            REG(p->w_b) = (group << W_COMMIT_GROUP_SHIFT) | (lane << W_COMMIT_LANE_SHIFT);
            if (++lane == p->parallel) {
                lane = 0;
                group++;
            }
        }
        return;
    }
    /* dense: word g·n + c holds column c of rows g·lanes … (lane 0 in bits 0–7) */
    REG(p->ctrl) = DENSE_CTRL_CLEAR_MASK;
    REG(p->w_a) = 0;
    uint32_t n = l->c_in, lanes = p->parallel;
    const int8_t *rows = (const int8_t *)w;
    for (uint32_t row = 0; row < l->c_out; row += lanes, rows += lanes * n)
        for (uint32_t c = 0; c < n; c++) {
            uint32_t word = 0;
            const int8_t *at = rows + c;
            for (uint32_t k = 0, shift = 0; k < lanes; k++, shift += 8, at += n)
                word |= (uint32_t)(uint8_t)*at << shift;
            REG(p->w_b) = word;
        }
}

/* Four int8 channels from x (channel stride `plane`), channel 0 in byte 0; fewer than four: zeros above. */
static uint32_t pack4(const int32_t *x, uint32_t channels, uint32_t plane) {
    uint32_t v = 0;
    for (uint32_t shift = 0; shift < 32 && channels; shift += 8, channels--, x += plane)
        v |= (uint32_t)(uint8_t)*x << shift;
    return v;
}

int accel_run(uint8_t index, const struct blob_layer *l, const int32_t *x, int32_t *y) {
    const struct periph *p = &PERIPHERALS[index];
    int conv = p->kind == PERIPH_CONV;
    /* Input words: pixel-major, four int8 channels per word (channel c in byte c % 4 of word c / 4);
     * a dense layer's inputs four per word. Outputs: pixel-major, channel-minor, into C × H × W. No
     * multiplications: every index advances by addition. */
    uint32_t plane = conv ? l->h_in * l->w_in : 1;
    uint32_t per_pixel = conv ? (l->c_in + 3) >> 2 : l->c_in >> 2;
    uint32_t words = conv ? plane * per_pixel : per_pixel;
    uint32_t outputs = conv ? l->c_out * plane : l->c_out;
    uint32_t group_stride = 4 * plane;             /* from one word's first channel to the next word's */
    uint32_t sent = 0, got = 0, word = 0, left = l->c_in;
    const int32_t *in = x, *pixel = x;
    uint32_t out_channel = 0, out_index = 0, out_pixel = 0;
    if (conv)
        REG(p->ctrl) = CONV_CTRL_START_MASK;
    while (got < outputs) {
        uint32_t levels = REG(p->levels);
        uint32_t room = (levels & LEVELS_IN_FREE_MASK) >> LEVELS_IN_FREE_SHIFT;
        uint32_t ready = (levels & LEVELS_OUT_LEVEL_MASK) >> LEVELS_OUT_LEVEL_SHIFT;
        for (; room && sent < words; room--, sent++) {
            if (conv) {
                REG(p->in_data) = pack4(in, left < 4 ? left : 4, plane);
                if (++word == per_pixel) {
                    word = 0;
                    left = l->c_in;
                    in = ++pixel;
                } else {
                    left -= 4;
                    in += group_stride;
                }
            } else {
                REG(p->in_data) = pack4(in, 4, 1);
                in += 4;
            }
        }
        for (; ready; ready--, got++) {
            int32_t v = (int32_t)REG(p->out_data);
            if (!conv) {
                y[got] = v;
                continue;
            }
            y[out_index] = v;
            if (++out_channel == l->c_out) {
                out_channel = 0;
                out_index = ++out_pixel;
            } else {
                out_index += plane;
            }
        }
    }
    uint32_t err = REG(p->status) & (conv ? CONV_STATUS_ERR_MASK : DENSE_STATUS_ERR_MASK);
    return err ? 1 : 0;
}
