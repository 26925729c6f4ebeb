/* The model interpreter: see interp.h. Activations are int32, C × H × W; a weight layer's input is first
 * requantised with the previous weight layer's shift (round half up, saturate to act_width bits), as the
 * golden model does. Products of int8 weights and int8 activations use quarter squares (RV32I has no
 * multiplier); other products the runtime's __mulsi3. */
#include "runtime.h"
#include "protocol.h"
#include "interp.h"
#include "accel.h"

static uint16_t qsq[257];          /* ⌊n²/4⌋, n = 0…256: a·b for any a, b in [-128, 127] */
static int qsq_ready;

static inline int32_t mul_i8(int32_t a, int32_t b) {
    int32_t s = a + b, d = a - b;
    if (s < 0)
        s = -s;
    if (d < 0)
        d = -d;
    return (int32_t)qsq[s] - (int32_t)qsq[d];
}

static const struct blob_layer *layer_at(const uint32_t *blob, uint32_t n) {
    return (const struct blob_layer *)(blob + BLOB_HEADER_WORDS) + n;
}

static uint32_t weight_bytes(const struct blob_layer *l) {
    uint32_t per = l->kind == KIND_CONV2D ? l->k * l->k : 1;
    if (l->method == METHOD_QGP)
        return l->c_out * l->c_in;
    return l->c_out * l->c_in * per;           /* dense: one int8 per weight */
}

int interp_check(const uint32_t *blob, size_t len, size_t arena_bytes, struct model_info *info) {
    if (len < 4 * BLOB_HEADER_WORDS || blob[BLOB_MAGIC] != BLOB_MAGIC_VALUE || blob[BLOB_VERSION] != BLOB_VERSION_VALUE ||
            blob[BLOB_TOTAL_BYTES] != len || blob[BLOB_ACT_WIDTH] != 8)
        return STATUS_BAD_MODEL;
    uint32_t layers = blob[BLOB_LAYERS];
    if (layers == 0 || layers > INTERP_MAX_LAYERS || layers > (len / 4 - BLOB_HEADER_WORDS) / BLOB_LAYER_WORDS)
        return STATUS_BAD_MODEL;
    uint32_t c = blob[BLOB_IN_C], h = blob[BLOB_IN_H], w = blob[BLOB_IN_W], max_act = blob[BLOB_MAX_ACTIVATION];
    uint32_t elements = c * h * w;
    if (elements == 0 || elements > max_act)
        return STATUS_BAD_MODEL;
    for (uint32_t n = 0; n < layers; n++) {
        const struct blob_layer *l = layer_at(blob, n);
        if (l->c_in * l->h_in * l->w_in != elements || l->c_out * l->h_out * l->w_out > max_act)
            return STATUS_BAD_MODEL;
        if (l->kind == KIND_CONV2D || l->kind == KIND_LINEAR) {
            if ((l->method != METHOD_DENSE && l->method != METHOD_QGP) ||
                    (l->in_shift != IN_SHIFT_NONE && l->in_shift > 31) || l->k == 0 || l->stride == 0 ||
                    l->w_off % 4 || l->w_off > len || weight_bytes(l) > len - l->w_off)
                return STATUS_BAD_MODEL;
            if ((l->flags & FLAG_BIAS) && (l->b_off % 4 || l->b_off > len || 4 * l->c_out > len - l->b_off))
                return STATUS_BAD_MODEL;
            if (l->kind == KIND_LINEAR && (l->h_out != 1 || l->w_out != 1 || l->method != METHOD_DENSE))
                return STATUS_BAD_MODEL;
            if (l->method == METHOD_QGP && (l->aux == 0 || l->aux > 7))
                return STATUS_BAD_MODEL;
        } else if (l->kind == KIND_POOL) {
            if (l->k == 0 || l->stride == 0 || l->c_out != l->c_in)
                return STATUS_BAD_MODEL;
        } else if (l->kind != KIND_RELU && l->kind != KIND_FLATTEN) {
            return STATUS_BAD_MODEL;
        }
        elements = l->c_out * l->h_out * l->w_out;
    }
    if (elements != blob[BLOB_OUTPUTS])
        return STATUS_BAD_MODEL;
    if (2 * 4 * (size_t)max_act > arena_bytes)
        return STATUS_NO_ROOM;
    info->blob = blob;
    info->layers = layers;
    info->input_bytes = blob[BLOB_IN_C] * blob[BLOB_IN_H] * blob[BLOB_IN_W];
    info->outputs = elements;
    info->max_activation = max_act;
    info->accelerated = 0;
    for (uint32_t n = 0; n < layers; n++)
        info->peripheral[n] = ACCEL_NONE;
    if (!qsq_ready) {
        uint32_t square = 0;
        for (uint32_t i = 0; i < 257; i++) {
            qsq[i] = (uint16_t)(square >> 2);
            square += 2 * i + 1;
        }
        qsq_ready = 1;
    }
    return STATUS_OK;
}

static void requantise(int32_t *x, uint32_t n, uint32_t shift) {
    for (uint32_t i = 0; i < n; i++) {
        int32_t v = x[i];
        if (shift)
            v = (v >> shift) + ((v >> (shift - 1)) & 1);    /* ⌊v / 2^shift + 1/2⌋, without overflow */
        x[i] = v > 127 ? 127 : v < -128 ? -128 : v;
    }
}

/* The first index in [0, n) whose position i·s + off is >= 0, and the first whose position is >= limit. */
static void valid_range(uint32_t n, uint32_t s, int32_t off, int32_t limit, uint32_t *lo, uint32_t *hi) {
    uint32_t i = 0;
    int32_t at = off;
    while (i < n && at < 0)
        i++, at += (int32_t)s;
    *lo = i;
    while (i < n && at < limit)
        i++, at += (int32_t)s;
    *hi = i;
}

struct conv_geometry {
    uint32_t s, wd, ho, wo;
    int32_t pad, h, row_step;      /* row_step: stride · input width */
};

/* out[oy][ox] += a · plane[oy·s − pad + r][ox·s − pad + c] over every output pixel whose tap is inside
 * the input (zero padding): one weight, the whole output plane (weight stationary). */
static void tap(const struct conv_geometry *g, int32_t *out, const int32_t *plane, uint32_t r, uint32_t c,
                int32_t a, int small) {
    uint32_t y_lo, y_hi, x_lo, x_hi;
    valid_range(g->ho, g->s, (int32_t)r - g->pad, g->h, &y_lo, &y_hi);
    valid_range(g->wo, g->s, (int32_t)c - g->pad, (int32_t)g->wd, &x_lo, &x_hi);
    if (x_lo >= x_hi)
        return;
    int32_t iy = (int32_t)r - g->pad, ix0 = (int32_t)c - g->pad;
    for (uint32_t oy = 0; oy < y_lo; oy++)
        iy += (int32_t)g->s;
    const int32_t *src = plane + (iy * (int32_t)g->wd + ix0);
    int32_t *dst = out;
    for (uint32_t oy = 0; oy < y_lo; oy++)
        dst += g->wo;
    for (uint32_t oy = y_lo; oy < y_hi; oy++, src += g->row_step, dst += g->wo) {
        const int32_t *p = src;
        for (uint32_t ox = 0; ox < x_lo; ox++)
            p += g->s;
        if (a == 1)
            for (uint32_t ox = x_lo; ox < x_hi; ox++, p += g->s)
                dst[ox] += *p;
        else if (a == -1)
            for (uint32_t ox = x_lo; ox < x_hi; ox++, p += g->s)
                dst[ox] -= *p;
        else if (small)
            for (uint32_t ox = x_lo; ox < x_hi; ox++, p += g->s)
                dst[ox] += mul_i8(a, *p);
        else
            for (uint32_t ox = x_lo; ox < x_hi; ox++, p += g->s)
                dst[ox] += a * *p;
    }
}

static void conv2d(const struct blob_layer *l, const uint8_t *base, const int32_t *x, int32_t *y) {
    struct conv_geometry g = {l->stride, l->w_in, l->h_out, l->w_out, (int32_t)l->padding, (int32_t)l->h_in,
                              (int32_t)(l->stride * l->w_in)};
    uint32_t k = l->k, hw = l->h_in * l->w_in, plane_out = l->h_out * l->w_out;
    int small = l->flags & FLAG_INT8_INPUT;
    const int8_t *w = (const int8_t *)(base + l->w_off);
    const uint8_t *code = base + l->w_off;
    uint32_t index_mask = (1u << l->aux) - 1;
    int32_t *out = y;
    for (uint32_t o = 0; o < l->c_out; o++, out += plane_out) {
        for (uint32_t i = 0; i < plane_out; i++)
            out[i] = 0;
        const int32_t *plane = x;
        for (uint32_t ci = 0; ci < l->c_in; ci++, plane += hw) {
            if (l->method == METHOD_QGP) {
                uint32_t c = *code & index_mask, r = 0;
                int32_t sign = (*code >> l->aux) ? -1 : 1;
                code++;
                while (c >= k)                        /* tap → row, column without a divider */
                    c -= k, r++;
                tap(&g, out, plane, r, c, sign, small);
                continue;
            }
            for (uint32_t r = 0; r < k; r++)
                for (uint32_t c = 0; c < k; c++, w++)
                    if (*w)
                        tap(&g, out, plane, r, c, *w, small);
        }
    }
}

static void linear(const struct blob_layer *l, const uint8_t *base, const int32_t *x, int32_t *y) {
    const int8_t *w = (const int8_t *)(base + l->w_off);
    int small = l->flags & FLAG_INT8_INPUT;
    for (uint32_t o = 0; o < l->c_out; o++) {
        int32_t acc = 0;
        const int8_t *row = w + o * l->c_in;
        for (uint32_t i = 0; i < l->c_in; i++)
            if (x[i])
                acc += small ? mul_i8(row[i], x[i]) : row[i] * x[i];
        y[o] = acc;
    }
}

static void pool(const struct blob_layer *l, const int32_t *x, int32_t *y) {
    uint32_t k = l->k, wd = l->w_in, hw = l->h_in * wd, row_step = l->stride * wd;
    for (uint32_t c = 0; c < l->c_out; c++, x += hw) {
        const int32_t *row = x;
        for (uint32_t oy = 0; oy < l->h_out; oy++, row += row_step) {
            const int32_t *p = row;
            if (k == 2 && l->aux != POOL_MAX) {              /* the common case, unrolled */
                const int32_t *q = row + wd;
                for (uint32_t ox = 0; ox < l->w_out; ox++, p += l->stride, q += l->stride)
                    *y++ = p[0] + p[1] + q[0] + q[1];
                continue;
            }
            for (uint32_t ox = 0; ox < l->w_out; ox++, p += l->stride) {
                int32_t acc = l->aux == POOL_MAX ? p[0] : 0;
                const int32_t *q = p;
                if (l->aux == POOL_MAX) {
                    for (uint32_t r = 0; r < k; r++, q += wd)
                        for (uint32_t t = 0; t < k; t++)
                            acc = q[t] > acc ? q[t] : acc;
                } else {
                    for (uint32_t r = 0; r < k; r++, q += wd)
                        for (uint32_t t = 0; t < k; t++)
                            acc += q[t];
                }
                *y++ = acc;
            }
        }
    }
}

void interp_bind(struct model_info *m) {
    uint32_t taken = 0;
    m->accelerated = 0;
    for (uint32_t n = 0; n < m->layers; n++) {
        const struct blob_layer *l = layer_at(m->blob, n);
        uint8_t p = ACCEL_NONE;
        if (l->kind == KIND_CONV2D || l->kind == KIND_LINEAR)
            p = accel_match(l, taken);
        m->peripheral[n] = p;
        if (p != ACCEL_NONE) {
            taken |= 1u << p;
            m->accelerated++;
            accel_load(p, l, (const uint8_t *)m->blob);
        }
    }
}

int interp_run(const struct model_info *m, const int8_t *image, int32_t *arena, int32_t *scores,
               int accelerate, uint32_t *layer_cycles) {
    int errors = 0;
    int32_t *x = arena, *y = arena + m->max_activation;
    const uint8_t *base = (const uint8_t *)m->blob;
    for (uint32_t i = 0; i < m->input_bytes; i++)
        x[i] = image[i];
    for (uint32_t n = 0; n < m->layers; n++) {
        const struct blob_layer *l = layer_at(m->blob, n);
        uint32_t count = l->c_out * l->h_out * l->w_out;
        if (layer_cycles)
            layer_cycles[n] = cycles32();
        if (l->kind == KIND_RELU) {
            for (uint32_t i = 0; i < count; i++)
                x[i] = x[i] < 0 ? 0 : x[i];
            continue;
        }
        if (l->kind == KIND_FLATTEN)
            continue;
        if (l->kind == KIND_POOL) {
            pool(l, x, y);
        } else {
            if (l->in_shift != IN_SHIFT_NONE)
                requantise(x, l->c_in * l->h_in * l->w_in, l->in_shift);
            if (accelerate && m->peripheral[n] != ACCEL_NONE)
                errors += accel_run(m->peripheral[n], l, x, y);
            else if (l->kind == KIND_CONV2D)
                conv2d(l, base, x, y);
            else
                linear(l, base, x, y);
            if (l->flags & FLAG_BIAS) {
                const int32_t *bias = (const int32_t *)(base + l->b_off);
                uint32_t plane = l->h_out * l->w_out;
                for (uint32_t o = 0, i = 0; o < l->c_out; o++)
                    for (uint32_t p = 0; p < plane; p++, i++)
                        y[i] += bias[o];
            }
        }
        int32_t *t = x;
        x = y;
        y = t;
    }
    for (uint32_t i = 0; i < m->outputs; i++)
        scores[i] = x[i];
    if (layer_cycles) {
        uint32_t end = cycles32();
        for (uint32_t n = m->layers; n-- > 0;) {
            uint32_t start = layer_cycles[n];
            layer_cycles[n] = end - start;
            end = start;
        }
    }
    return errors;
}
