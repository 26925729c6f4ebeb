/* Drivers of the convolution peripherals (ConvAccel with QGP or int8 weights, SmartDeal rows or MLG
 * factors) and the matrix-vector ones (DenseAccel, CirculantAccel, SmartDealDenseAccel, MLGDenseAccel).
 * Weights go in as the method stores them: the peripheral decodes or generates them. */
#include "runtime.h"
#include "accel.h"
#include "bitstream.h"
#include "interp.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

/* A decoded peripheral's parameters against the layer's: SmartDeal the same group size, basis and exponent
 * widths, and a row section that fits its memory; MLG the same ranks and code widths. */
static int decoded_match(const struct periph *p, const struct blob_layer *l) {
    if (l->method == METHOD_SMARTDEAL) {
        uint32_t basis_bits = l->p1 & 0xff, rows_from = 9 * basis_bits * (l->c_out / l->p0);
        return p->p0 == (l->p0 | basis_bits << 16) && p->p1 == ((l->p1 >> 8) & 0xff) &&
               (l->aux - rows_from + 31) / 32 <= p->p2;
    }
    if (l->method == METHOD_MLG)
        return p->p0 == l->p0 && p->p1 == l->p1;
    return 1;
}

uint8_t accel_match(const struct blob_layer *l, uint32_t taken) {
    for (uint32_t i = 0; i < PERIPH_COUNT && i < 32; i++) {
        const struct periph *p = &PERIPHERALS[i];
        if (taken & (1u << i) || p->method != l->method || !decoded_match(p, l))
            continue;
        if (l->kind == KIND_CONV2D && p->kind == PERIPH_CONV && p->k == l->k && l->padding == l->k / 2 &&
                l->stride == 1 && p->c_in == l->c_in && p->c_out == l->c_out && p->width == l->w_in &&
                p->height == l->h_in)
            return (uint8_t)i;
        if (l->kind == KIND_LINEAR && p->kind == PERIPH_DENSE && p->c_in == l->c_in && p->c_out == l->c_out) {
            if (l->method == METHOD_CIRCULANT &&
                    (p->k != (l->p0 & 0xffff) || p->p0 != l->p1 || p->p1 < (l->p0 >> 16)))
                continue;                          /* block size, mid shift, spectrum width */
            return (uint8_t)i;
        }
    }
    return ACCEL_NONE;
}

void accel_load(uint8_t index, const struct blob_layer *l, const uint8_t *base) {
    const struct periph *p = &PERIPHERALS[index];
    const uint8_t *w = base + l->w_off;
    /* clear: empty the FIFOs, drop a partial frame or vector (the weights are kept) */
    uint32_t clear = p->kind == PERIPH_CONV ? CONV_CTRL_CLEAR_MASK : DENSE_CTRL_CLEAR_MASK;
    REG(p->out_cfg) = 0;                                     /* raw accumulators, one per word */
    if (RUNTIME_HAS(METHOD_SMARTDEAL) && l->method == METHOD_SMARTDEAL) {
        /* the basis values, then the row section's words from where the basis codes end */
        struct bits b = {(const uint32_t *)w, 0, l->aux};
        uint32_t basis_bits = l->p1 & 0xff, values = 9 * (l->c_out / l->p0);
        REG(p->ctrl) = clear;
        for (uint32_t i = 0; i < values; i++)
            REG(p->basis) = (i << BASIS_INDEX_SHIFT) | (take(&b, basis_bits) << BASIS_VALUE_SHIFT);
        REG(p->w_a) = 0;
        while (b.pos < b.end) {
            uint32_t left = b.end - b.pos, low = take(&b, left < 16 ? left : 16);
            left = b.end - b.pos;
            REG(p->w_b) = low | (left ? take(&b, left < 16 ? left : 16) << 16 : 0);
        }
        return;
    }
    if (RUNTIME_HAS(METHOD_MLG) && l->method == METHOD_MLG) {
        /* codes as the stream holds them (b-bit, (c + 2^b − 1) / 2): the registers take odd codes c */
        struct bits b = {(const uint32_t *)w, 0, 8 * l->w_bytes};
        uint32_t bo = l->p0 & 0xffff, bi = l->p0 >> 16, kk = l->k * l->k;
        REG(p->ctrl) = clear;
        for (uint32_t f = 0; f < 3; f++) {
            uint32_t bits = (l->p1 >> (8 * f)) & 0xff, top = (1u << bits) - 1;
            uint32_t outer = f == 0 ? bo * bi * kk : f == 1 ? bo : l->c_out;
            uint32_t middle = f == 1 ? l->c_in : 1, inner = f == 1 ? bi : f == 2 ? bo : 1;
            for (uint32_t a = 0; a < outer; a++)
                for (uint32_t c = 0; c < middle; c++)
                    for (uint32_t e = 0; e < inner; e++) {
                        uint32_t code = (2 * take(&b, bits) - top) & 0xffff;
                        if (f == 0)
                            REG(p->basis) = (a << BASIS_INDEX_SHIFT) | (code << BASIS_VALUE_SHIFT);
                        else if (f == 1)                 /* u[b][ci][i]: word ci, element b·bi + i */
                            REG(p->u) = (c << ELEMENT_ADDR_SHIFT) | ((a * bi + e) << ELEMENT_ELEM_SHIFT) |
                                        (code << ELEMENT_VALUE_SHIFT);
                        else                             /* v[o][b]: word o, element b */
                            REG(p->v) = (a << ELEMENT_ADDR_SHIFT) | (e << ELEMENT_ELEM_SHIFT) |
                                        (code << ELEMENT_VALUE_SHIFT);
                    }
        }
        return;
    }
    if (RUNTIME_HAS(METHOD_CIRCULANT) && l->method == METHOD_CIRCULANT) {
        /* per block, bins 0 … k/2: re in bits 0–15, im in 16–31 (bins 0 and k/2 are real) */
        uint32_t k = l->p0 & 0xffff, half = k / 2, blocks = (l->c_out / k) * (l->c_in / k);
        const int16_t *s = (const int16_t *)w;
        REG(p->ctrl) = DENSE_CTRL_CLEAR_MASK;
        REG(p->w_a) = 0;
        for (uint32_t blk = 0; blk < blocks; blk++, s += k)
            for (uint32_t bin = 0; bin <= half; bin++) {
                uint32_t im = (bin == 0 || bin == half) ? 0 : (uint16_t)s[half + bin];
                REG(p->w_b) = (uint16_t)s[bin] | im << 16;
            }
        return;
    }
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
    uint32_t decoded = l->method == METHOD_SMARTDEAL || l->method == METHOD_MLG;
    uint32_t err = REG(p->status) & (!conv ? DENSE_STATUS_ERR_MASK : decoded ? DECODE_STATUS_ERR_MASK : CONV_STATUS_ERR_MASK);
    return err ? 1 : 0;
}
