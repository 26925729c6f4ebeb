/* The model interpreter: see interp.h. Activations are int32, C × H × W; a weight layer's input is first
 * requantised with the previous weight layer's shift (round half up, saturate to act_width bits), as the
 * golden model does. Products of int8 weights and int8 activations use quarter squares (RV32I has no
 * multiplier); other products the runtime's __mulsi3.
 *
 * Compressed layers keep their stored form in the blob and are decoded while they run, into the scratch
 * memory after the two activation buffers. SmartDeal decodes one output filter (or row) at a time by
 * shift-and-add of its basis, and each decoded filter then runs as a dense one. MLG runs in factored form
 * (mlg_layer) and ESCALATE basis first (escalate_layer), as their hardware does. Either way the integers
 * are the golden model's (insitu.golden.methods, integer_weights), so the 32-bit accumulators are too.
 * Circulant layers run the 16-bit radix-2² FFT of insitu.golden.fft, bit for bit. */
#include "runtime.h"
#include "protocol.h"
#include "interp.h"
#include "accel.h"
#include "bitstream.h"

static const struct blob_layer *layer_at(const uint32_t *blob, uint32_t n) {
    return (const struct blob_layer *)(blob + BLOB_HEADER_WORDS) + n;
}

/* The bytes of stored weights a dense or QGP layer needs. */
static uint32_t weight_bytes(const struct blob_layer *l) {
    uint32_t per = l->kind == KIND_CONV2D ? l->k * l->k : 1;
    if (l->method == METHOD_QGP)
        return l->c_out * l->c_in;
    return l->c_out * l->c_in * per;           /* dense: one int8 per weight */
}

static uint32_t log2_ceil(uint32_t v) {          /* the smallest e with 2^e >= v */
    uint32_t e = 0;
    while ((1u << e) < v)
        e++;
    return e;
}

/* The scratch words a compressed layer needs (0: none), or BAD when its parameters are invalid. */
#define BAD (~0u)
static uint32_t layer_scratch(const struct blob_layer *l) {
    uint32_t kk = l->k * l->k, filter = l->c_in * kk;
    switch (l->method) {
    case METHOD_DENSE:
    case METHOD_QGP:
        if (weight_bytes(l) > l->w_bytes)
            return BAD;
        if (l->method == METHOD_QGP && (l->kind != KIND_CONV2D || l->aux == 0 || l->aux > 7))
            return BAD;
        return 0;
    case METHOD_SMARTDEAL: {
        if (!RUNTIME_HAS(METHOD_SMARTDEAL))
            return BAD;
        uint32_t group = l->p0, basis_bits = l->p1 & 0xff, exp_bits = (l->p1 >> 8) & 0xff;
        if (group == 0 || l->c_out % group || basis_bits < 2 || basis_bits > 16 || exp_bits < 1 ||
                exp_bits > 16 || 3 * l->p2 < filter || 3 * l->p2 > filter + 2 || l->aux > 8 * l->w_bytes ||
                l->aux < 9 * basis_bits * (l->c_out / group))
            return BAD;
        return 9 * (l->c_out / group) + 3 * l->p2;
    }
    case METHOD_MLG: {
        if (!RUNTIME_HAS(METHOD_MLG))
            return BAD;
        uint32_t bo = l->p0 & 0xffff, bi = l->p0 >> 16;
        for (uint32_t f = 0; f < 3; f++) {
            uint32_t bits = (l->p1 >> (8 * f)) & 0xff;
            if (bits < 1 || bits > 16)
                return BAD;
        }
        if (bo == 0 || bi == 0 || (l->kind == KIND_LINEAR && l->k != 1))
            return BAD;
        return (bo + 1) * filter + bo * bi * kk + bo * l->h_out * l->w_out;   /* + the bo level-1 outputs */
    }
    case METHOD_ESCALATE: {
        if (!RUNTIME_HAS(METHOD_ESCALATE))
            return BAD;
        uint32_t bases = l->p0, basis_bits = (l->p1 >> 8) & 0xff, coef_bits = (l->p1 >> 16) & 0xff;
        if (l->kind != KIND_CONV2D || bases == 0 || basis_bits < 2 || basis_bits > 16 || coef_bits < 2 ||
                coef_bits > 16)
            return BAD;
        /* the basis, a stream cursor per filter, the basis maps of one input channel */
        return ((l->p1 & 1) ? bases * kk : l->c_in * bases * kk) + l->c_out + bases * l->h_out * l->w_out;
    }
    case METHOD_CIRCULANT: {
        if (!RUNTIME_HAS(METHOD_CIRCULANT))
            return BAD;
        uint32_t k = l->p0 & 0xffff, twiddles = 0, stages = l->aux;
        if (l->kind != KIND_LINEAR || stages < 1 || stages > 12 || k != 1u << stages || l->c_in % k ||
                l->c_out % k || l->p1 > 31 || l->p2 > 15 || l->w_bytes != 2 * (l->c_out / k) * l->c_in)
            return BAD;
        for (uint32_t s = 0; s + 1 < stages; s += 2)
            if (s + 2 < stages)
                twiddles += k >> s;
        if (l->x_bytes != 2 * 2 * 2 * twiddles)
            return BAD;
        return (l->c_in / k) * (k + 2) + 2 * k;
    }
    }
    return BAD;
}

int interp_check(const uint32_t *blob, size_t len, size_t arena_bytes, struct model_info *info) {
    if (len < 4 * BLOB_HEADER_WORDS || blob[BLOB_MAGIC] != BLOB_MAGIC_VALUE || blob[BLOB_VERSION] != BLOB_VERSION_VALUE ||
            blob[BLOB_TOTAL_BYTES] != len || blob[BLOB_ACT_WIDTH] != 8)
        return STATUS_BAD_MODEL;
    uint32_t layers = blob[BLOB_LAYERS];
    if (layers == 0 || layers > INTERP_MAX_LAYERS || layers > (len / 4 - BLOB_HEADER_WORDS) / BLOB_LAYER_WORDS)
        return STATUS_BAD_MODEL;
    uint32_t c = blob[BLOB_IN_C], h = blob[BLOB_IN_H], w = blob[BLOB_IN_W], max_act = blob[BLOB_MAX_ACTIVATION];
    uint32_t elements = c * h * w, scratch = blob[BLOB_SCRATCH_WORDS];
    if (elements == 0 || elements > max_act)
        return STATUS_BAD_MODEL;
    for (uint32_t n = 0; n < layers; n++) {
        const struct blob_layer *l = layer_at(blob, n);
        if (l->c_in * l->h_in * l->w_in != elements || l->c_out * l->h_out * l->w_out > max_act)
            return STATUS_BAD_MODEL;
        if (l->kind == KIND_CONV2D || l->kind == KIND_LINEAR) {
            if ((l->in_shift != IN_SHIFT_NONE && l->in_shift > 31) || l->k == 0 || l->stride == 0 ||
                    l->w_off % 4 || l->w_off > len || l->w_bytes > len - l->w_off ||
                    (l->x_bytes && (l->x_off % 4 || l->x_off > len || l->x_bytes > len - l->x_off)))
                return STATUS_BAD_MODEL;
            if ((l->flags & FLAG_BIAS) && (l->b_off % 4 || l->b_off > len || 4 * l->c_out > len - l->b_off))
                return STATUS_BAD_MODEL;
            if (l->kind == KIND_LINEAR && (l->h_out != 1 || l->w_out != 1 || l->k != 1))
                return STATUS_BAD_MODEL;
            if (l->method == METHOD_CIRCULANT && !(l->flags & FLAG_INT8_INPUT))
                return STATUS_BAD_MODEL;
            if (l->method > 31 || !RUNTIME_HAS(l->method))
                return l->method >= METHOD_DENSE && l->method <= METHOD_CIRCULANT ? STATUS_UNSUPPORTED
                                                                                   : STATUS_BAD_MODEL;
            uint32_t need = layer_scratch(l);
            if (need == BAD || need > scratch)
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
    if (scratch > (1u << 24) || 4 * (2 * (size_t)max_act + scratch) > arena_bytes)
        return STATUS_NO_ROOM;
    info->blob = blob;
    info->layers = layers;
    info->input_bytes = blob[BLOB_IN_C] * blob[BLOB_IN_H] * blob[BLOB_IN_W];
    info->outputs = elements;
    info->max_activation = max_act;
    info->accelerated = 0;
    for (uint32_t n = 0; n < layers; n++)
        info->peripheral[n] = ACCEL_NONE;
    mul8_init();
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

static inline int fits_i8(int32_t v) { return v >= -128 && v <= 127; }
/* 16-bit weights come only from the decoders (dense ones are int8) */
#define RUNTIME_DECODES (RUNTIME_HAS(METHOD_SMARTDEAL) || RUNTIME_HAS(METHOD_MLG) || RUNTIME_HAS(METHOD_ESCALATE))
static inline int fits_i16(int32_t v) { return RUNTIME_DECODES && v >= -32768 && v <= 32767; }
static inline int32_t shl(int32_t v, uint32_t n) { return (int32_t)((uint32_t)v << n); }

/* A 16-bit weight as two table products: a = hi·256 + lo, lo in [-128, 127], hi in [-128, 128]
 * (mul8's table covers |a ± b| <= 256). */
static inline int32_t low_byte(int32_t a) { return (int32_t)(((uint32_t)a & 0xffu) ^ 0x80u) - 0x80; }

/* a · x for an int8 activation x (int8: the layer's inputs are int8) */
static inline int32_t mul_act(int32_t a, int32_t x, int int8) {
    if (int8 && fits_i8(a))
        return mul8(a, x);
    if (int8 && fits_i16(a)) {
        int32_t lo = low_byte(a);
        return mul8(lo, x) + shl(mul8((a - lo) >> 8, x), 8);
    }
    return a * x;
}

/* out[oy][ox] += a · plane[oy·s − pad + r][ox·s − pad + c] over every output pixel whose tap is inside
 * the input (zero padding): one weight, the whole output plane (weight stationary). int8: the inputs are
 * int8, so products come from mul8's table (one lookup pair for an int8 weight, two for a 16-bit one). */
static void tap(const struct conv_geometry *g, int32_t *out, const int32_t *plane, uint32_t r, uint32_t c,
                int32_t a, int int8) {
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
        else if (int8 && fits_i8(a))
            for (uint32_t ox = x_lo; ox < x_hi; ox++, p += g->s)
                dst[ox] += mul8(a, *p);
        else if (int8 && fits_i16(a)) {
            int32_t lo = low_byte(a), hi = (a - lo) >> 8;
            for (uint32_t ox = x_lo; ox < x_hi; ox++, p += g->s)
                dst[ox] += mul8(lo, *p) + shl(mul8(hi, *p), 8);
        } else
            for (uint32_t ox = x_lo; ox < x_hi; ox++, p += g->s)
                dst[ox] += a * *p;
    }
}

/* A compressed layer's filters, decoded in order (filter o: c_in × k × k int32, as the dense layout). */
struct decoder {
    const struct blob_layer *l;
    struct bits bits;
    int32_t *table;             /* SmartDeal and ESCALATE: the basis; MLG: the level-1 matrices */
    int32_t *filter;
    uint32_t group_left, group; /* SmartDeal: filters left in this basis group, the group's first word */
    int32_t *basis;             /* MLG: its basis codes (bo × bi × k²) */
};

static void decoder_start(struct decoder *d, const struct blob_layer *l, const uint8_t *base, int32_t *scratch) {
    uint32_t kk = l->k * l->k, filter = l->c_in * kk;
    d->l = l;
    d->bits.word = (const uint32_t *)(base + l->w_off);
    d->bits.pos = 0;
    d->bits.end = 8 * l->w_bytes;
    d->table = scratch;
    if (RUNTIME_HAS(METHOD_SMARTDEAL) && l->method == METHOD_SMARTDEAL) {
        uint32_t groups = l->c_out / l->p0, basis_bits = l->p1 & 0xff;
        for (uint32_t i = 0; i < 9 * groups; i++)
            d->table[i] = take_signed(&d->bits, basis_bits);
        d->filter = d->table + 9 * groups;
        d->group_left = l->p0;
        d->group = 0;
    } else if (RUNTIME_HAS(METHOD_MLG) && l->method == METHOD_MLG) {
        /* basis (bo × bi × k²), then u (bo × c_in × bi): W1[b] = u[b] · basis[b], kept for every filter */
        uint32_t bo = l->p0 & 0xffff, bi = l->p0 >> 16, bits0 = l->p1 & 0xff, bits1 = (l->p1 >> 8) & 0xff;
        int32_t top0 = (int32_t)((1u << bits0) - 1), top1 = (int32_t)((1u << bits1) - 1);
        int small_codes = bits0 <= 7 && bits1 <= 7;        /* codes within ±127: mul8's table */
        d->filter = d->table + bo * filter;
        d->basis = d->filter + filter;
        for (uint32_t i = 0; i < bo * bi * kk; i++)
            d->basis[i] = 2 * (int32_t)take(&d->bits, bits0) - top0;
        int32_t *w1 = d->table;
        for (uint32_t b = 0; b < bo; b++) {
            const int32_t *basis = d->basis + b * bi * kk;
            for (uint32_t c = 0; c < l->c_in; c++, w1 += kk) {
                for (uint32_t t = 0; t < kk; t++)
                    w1[t] = 0;
                for (uint32_t i = 0; i < bi; i++) {
                    int32_t u = 2 * (int32_t)take(&d->bits, bits1) - top1;
                    for (uint32_t t = 0; t < kk; t++)
                        w1[t] += small_codes ? mul8(u, basis[i * kk + t]) : u * basis[i * kk + t];
                }
            }
        }
    } else if (RUNTIME_HAS(METHOD_ESCALATE)) {                /* ESCALATE */
        uint32_t n = ((l->p1 & 1) ? 1 : l->c_in) * l->p0 * kk, basis_bits = (l->p1 >> 8) & 0xff;
        for (uint32_t i = 0; i < n; i++)
            d->table[i] = take_signed(&d->bits, basis_bits);
        d->filter = d->table + n;                          /* escalate_layer's working memory from here */
    }
}

/* Decode the next filter into d->filter. */
static void decoder_next(struct decoder *d) {
    const struct blob_layer *l = d->l;
    uint32_t kk = l->k * l->k, size = l->c_in * kk;
    int32_t *f = d->filter;
    if (RUNTIME_HAS(METHOD_SMARTDEAL) && l->method == METHOD_SMARTDEAL) {
        /* each row of 3: Σ_j ±(basis[group][j] << code), rows skipped whole or coefficients one by one */
        uint32_t exp_bits = (l->p1 >> 8) & 0xff;
        if (d->group_left == 0) {
            d->group_left = l->p0;
            d->group += 9;
        }
        d->group_left--;
        const int32_t *basis = d->table + d->group;
        for (uint32_t r = 0; r < l->p2; r++, f += 3) {
            f[0] = f[1] = f[2] = 0;
            if (take(&d->bits, 1))
                continue;
            for (uint32_t j = 0; j < 3; j++) {
                if (take(&d->bits, 1))
                    continue;
                uint32_t negative = take(&d->bits, 1), code = take(&d->bits, exp_bits);
                for (uint32_t c = 0; c < 3; c++) {
                    int32_t v = shl(basis[3 * j + c], code);
                    f[c] += negative ? -v : v;
                }
            }
        }
    } else if (RUNTIME_HAS(METHOD_MLG) && l->method == METHOD_MLG) {
        /* filter = Σ_b v[o][b] · W1[b] */
        uint32_t bo = l->p0 & 0xffff, bits2 = (l->p1 >> 16) & 0xff;
        int32_t top2 = (int32_t)((1u << bits2) - 1);
        for (uint32_t t = 0; t < size; t++)
            f[t] = 0;
        const int32_t *w1 = d->table;
        for (uint32_t b = 0; b < bo; b++, w1 += size) {
            int32_t v = 2 * (int32_t)take(&d->bits, bits2) - top2;
            for (uint32_t t = 0; t < size; t++)
                f[t] += v * w1[t];
        }
    }
}

/* v · z for a small MLG code v (odd, |v| < 2^16): shifts and adds, wrapping as the sums do. */
static int32_t mul_code(int32_t v, int32_t z) {
    uint32_t m = v < 0 ? 0u - (uint32_t)v : (uint32_t)v, acc = 0, zz = (uint32_t)z;
    for (; m; m >>= 1, zz <<= 1)
        if (m & 1)
            acc += zz;
    return (int32_t)(v < 0 ? 0u - acc : acc);
}

/* MLG in factored form: the bo level-1 products z_b = W1[b] · x first (a convolution with W1[b] as the
 * filter, or a dot product), then y[o] = Σ_b v[o][b] · z_b. Exact: the generated weights are v · W1 in
 * integers and the 32-bit sums wrap alike, for bo · (c_in·k² + c_out) instead of c_out · c_in·k² products
 * per output pixel. The v codes follow u in the stream, filter after filter. */
static void mlg_layer(const struct blob_layer *l, const uint8_t *base, const int32_t *x, int32_t *y, int32_t *scratch,
                      const struct conv_geometry *g) {
    struct decoder d;
    decoder_start(&d, l, base, scratch);
    uint32_t bo = l->p0 & 0xffff, bi = l->p0 >> 16, kk = l->k * l->k, hw = l->h_in * l->w_in;
    uint32_t plane_out = l->h_out * l->w_out, bits2 = (l->p1 >> 16) & 0xff;
    int32_t top2 = (int32_t)((1u << bits2) - 1);
    int small = l->flags & FLAG_INT8_INPUT;
    int32_t *z = d.basis + bo * bi * kk;
    const int32_t *w1 = d.table;
    for (uint32_t b = 0; b < bo; b++) {
        int32_t *zb = z + b * plane_out;
        for (uint32_t i = 0; i < plane_out; i++)
            zb[i] = 0;
        const int32_t *plane = x;
        for (uint32_t ci = 0; ci < l->c_in; ci++, plane += hw)
            for (uint32_t r = 0; r < l->k; r++)
                for (uint32_t c = 0; c < l->k; c++, w1++) {
                    if (!*w1)
                        continue;
                    if (l->kind == KIND_LINEAR) {
                        if (plane[0])
                            zb[0] = (int32_t)((uint32_t)zb[0] + (uint32_t)mul_act(*w1, plane[0], small));
                    } else
                        tap(g, zb, plane, r, c, *w1, small);
                }
    }
    for (uint32_t o = 0; o < l->c_out; o++, y += plane_out) {
        for (uint32_t i = 0; i < plane_out; i++)
            y[i] = 0;
        for (uint32_t b = 0; b < bo; b++) {
            int32_t v = 2 * (int32_t)take(&d.bits, bits2) - top2;
            const int32_t *zb = z + b * plane_out;
            for (uint32_t i = 0; i < plane_out; i++)
                y[i] = (int32_t)((uint32_t)y[i] + (uint32_t)mul_code(v, zb[i]));
        }
    }
}

/* ESCALATE basis first, as its hardware does: input channel c's basis maps z_m = basis[c][m] ⊛ x_c
 * (bases convolutions), then y[o] += Σ_m coef[o][c][m] · z_m for every filter o, the coefficients as
 * shifts (pow2) or shift-and-add products, zeros skipped. Exact: the decoded filter is Σ_m coef · basis in
 * integers and the 32-bit sums wrap alike, for c_in · (bases · k² + c_out · nonzeros) operations per
 * output pixel instead of c_out · c_in · k². The stream is filter-major (o, c, m), so a first pass
 * records where each filter's coefficients start and each filter then keeps its own cursor. */
static uint32_t escalate_coef_bits(const struct blob_layer *l) {     /* bits of one nonzero coefficient */
    uint32_t coef_bits = (l->p1 >> 16) & 0xff, exp_bits = log2_ceil(coef_bits);
    return (l->p1 & 2) ? 1 + (exp_bits ? exp_bits : 1) : coef_bits;
}

static void escalate_layer(const struct blob_layer *l, const uint8_t *base, const int32_t *x, int32_t *y,
                           int32_t *scratch, const struct conv_geometry *g) {
    struct decoder d;
    decoder_start(&d, l, base, scratch);
    uint32_t bases = l->p0, shared = l->p1 & 1, pow2 = l->p1 & 2, coef_bits = (l->p1 >> 16) & 0xff;
    uint32_t kk = l->k * l->k, hw = l->h_in * l->w_in, plane_out = l->h_out * l->w_out;
    uint32_t nonzero = escalate_coef_bits(l), exp_bits = nonzero - 1;
    int small = l->flags & FLAG_INT8_INPUT;
    uint32_t *cursor = (uint32_t *)d.filter;
    int32_t *z = d.filter + l->c_out;
    for (uint32_t o = 0; o < l->c_out; o++) {                  /* where each filter's coefficients start */
        cursor[o] = d.bits.pos;
        for (uint32_t t = 0; t < l->c_in * bases; t++)
            if (!take(&d.bits, 1))
                d.bits.pos = d.bits.pos + nonzero > d.bits.end ? d.bits.end : d.bits.pos + nonzero;
    }
    for (uint32_t i = 0; i < l->c_out * plane_out; i++)
        y[i] = 0;
    const int32_t *plane = x;
    for (uint32_t c = 0; c < l->c_in; c++, plane += hw) {
        const int32_t *basis = d.table + (shared ? 0 : c * bases * kk);
        for (uint32_t m = 0; m < bases; m++, basis += kk) {
            int32_t *zm = z + m * plane_out;
            for (uint32_t i = 0; i < plane_out; i++)
                zm[i] = 0;
            for (uint32_t r = 0, t = 0; r < l->k; r++)
                for (uint32_t q = 0; q < l->k; q++, t++)
                    if (basis[t])
                        tap(g, zm, plane, r, q, basis[t], small);
        }
        int32_t *out = y;
        for (uint32_t o = 0; o < l->c_out; o++, out += plane_out) {
            d.bits.pos = cursor[o];
            const int32_t *zm = z;
            for (uint32_t m = 0; m < bases; m++, zm += plane_out) {
                if (take(&d.bits, 1))
                    continue;
                if (pow2) {
                    uint32_t negative = take(&d.bits, 1), j = take(&d.bits, exp_bits);
                    if (negative)
                        for (uint32_t i = 0; i < plane_out; i++)
                            out[i] = (int32_t)((uint32_t)out[i] - ((uint32_t)zm[i] << j));
                    else
                        for (uint32_t i = 0; i < plane_out; i++)
                            out[i] = (int32_t)((uint32_t)out[i] + ((uint32_t)zm[i] << j));
                } else {
                    int32_t coef = take_signed(&d.bits, coef_bits);
                    for (uint32_t i = 0; i < plane_out; i++)
                        out[i] = (int32_t)((uint32_t)out[i] + (uint32_t)mul_code(coef, zm[i]));
                }
            }
            cursor[o] = d.bits.pos;
        }
    }
}

static void conv2d(const struct blob_layer *l, const uint8_t *base, const int32_t *x, int32_t *y, int32_t *scratch) {
    struct conv_geometry g = {l->stride, l->w_in, l->h_out, l->w_out, (int32_t)l->padding, (int32_t)l->h_in,
                              (int32_t)(l->stride * l->w_in)};
    uint32_t k = l->k, hw = l->h_in * l->w_in, plane_out = l->h_out * l->w_out;
    int small = l->flags & FLAG_INT8_INPUT;
    if (RUNTIME_HAS(METHOD_MLG) && l->method == METHOD_MLG) {
        mlg_layer(l, base, x, y, scratch, &g);
        return;
    }
    if (RUNTIME_HAS(METHOD_ESCALATE) && l->method == METHOD_ESCALATE) {
        escalate_layer(l, base, x, y, scratch, &g);
        return;
    }
    const int8_t *w = (const int8_t *)(base + l->w_off);
    const uint8_t *code = base + l->w_off;
    uint32_t index_mask = (1u << l->aux) - 1;
    struct decoder d;
    int decoded = RUNTIME_DECODES && l->method != METHOD_DENSE && l->method != METHOD_QGP;
    if (decoded)
        decoder_start(&d, l, base, scratch);
    int32_t *out = y;
    for (uint32_t o = 0; o < l->c_out; o++, out += plane_out) {
        for (uint32_t i = 0; i < plane_out; i++)
            out[i] = 0;
        const int32_t *plane = x, *f = 0;
        if (decoded) {
            decoder_next(&d);
            f = d.filter;
        }
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
                for (uint32_t c = 0; c < k; c++) {
                    int32_t a = decoded ? *f++ : *w++;
                    if (a)
                        tap(&g, out, plane, r, c, a, small);
                }
        }
    }
}

static void linear(const struct blob_layer *l, const uint8_t *base, const int32_t *x, int32_t *y, int32_t *scratch) {
    const int8_t *w = (const int8_t *)(base + l->w_off);
    int small = l->flags & FLAG_INT8_INPUT;
    if (RUNTIME_HAS(METHOD_MLG) && l->method == METHOD_MLG) {
        /* the input as a 1×1 image of c_in channels: each level-1 row is a "filter" of c_in 1×1 taps */
        mlg_layer(l, base, x, y, scratch, 0);
        return;
    }
    struct decoder d;
    int decoded = (RUNTIME_HAS(METHOD_SMARTDEAL) || RUNTIME_HAS(METHOD_MLG)) && l->method != METHOD_DENSE;
    if (decoded)
        decoder_start(&d, l, base, scratch);
    for (uint32_t o = 0; o < l->c_out; o++) {
        int32_t acc = 0;
        if (decoded) {
            decoder_next(&d);
            const int32_t *row = d.filter;
            for (uint32_t i = 0; i < l->c_in; i++)
                if (x[i] && row[i])
                    acc += mul_act(row[i], x[i], small);
        } else {
            const int8_t *row = w + o * l->c_in;
            for (uint32_t i = 0; i < l->c_in; i++)
                if (x[i])
                    acc += small ? mul8(row[i], x[i]) : row[i] * x[i];
        }
        y[o] = acc;
    }
}

/* -- circulant layers: the 16-bit radix-2² decimation-in-frequency FFT of insitu.golden.fft ---------------- */
static inline int32_t sat16(int32_t v) { return v > 32767 ? 32767 : v < -32768 ? -32768 : v; }
static inline int32_t round_shift(int32_t v, uint32_t s) { return s ? (v >> s) + ((v >> (s - 1)) & 1) : v; }

static uint32_t bit_reverse(uint32_t i, uint32_t bits) {
    uint32_t r = 0;
    for (uint32_t b = 0; b < bits; b++, i >>= 1)
        r = (r << 1) | (i & 1);
    return r;
}

/* Butterfly stage s: pairs (i, i + n/2^(s+1)) in each block of n/2^s; rotate (bf2i) turns the second half
 * of each block's differences by −j (+j inverse). Both outputs halved, round half up, saturated. */
static void butterflies(int32_t *re, int32_t *im, uint32_t n, uint32_t s, int rotate, int inverse) {
    uint32_t span = n >> (s + 1);
    for (uint32_t start = 0; start < n; start += 2 * span)
        for (uint32_t t = 0; t < span; t++) {
            uint32_t a = start + t, b = a + span;
            int32_t dr = re[a] - re[b], di = im[a] - im[b];
            if (rotate && t >= span / 2) {
                int32_t r = dr;
                dr = inverse ? -di : di;
                di = inverse ? r : -r;
            }
            re[a] = sat16(round_shift(re[a] + re[b], 1));
            im[a] = sat16(round_shift(im[a] + im[b], 1));
            re[b] = sat16(round_shift(dr, 1));
            im[b] = sat16(round_shift(di, 1));
        }
}

/* The transform in place, output in bit-reversed order; tw: this direction's twiddles, stage after stage. */
static void fft16(int32_t *re, int32_t *im, uint32_t n, uint32_t stages, const int16_t *tw, int inverse) {
    for (uint32_t s = 0; s + 1 < stages; s += 2) {
        butterflies(re, im, n, s, 1, inverse);
        butterflies(re, im, n, s + 1, 0, inverse);
        if (s + 2 >= stages)
            continue;
        uint32_t size = n >> s;
        for (uint32_t start = 0; start < n; start += size)
            for (uint32_t p = 0; p < size; p++) {
                int32_t vr = re[start + p], vi = im[start + p], wr = tw[2 * p], wi = tw[2 * p + 1];
                re[start + p] = sat16(round_shift(vr * wr - vi * wi, 15));     /* < 2^31: 16-bit operands */
                im[start + p] = sat16(round_shift(vr * wi + vi * wr, 15));
            }
        tw += 2 * size;
    }
    if (stages & 1)
        butterflies(re, im, n, stages - 1, 0, inverse);
}

/* y = IFFT(Σ_j FFT(x_j) ∘ S_ij) per output block i, as insitu.golden.circulant.matvec. */
static void circulant(const struct blob_layer *l, const uint8_t *base, const int32_t *x, int32_t *y, int32_t *scratch) {
    uint32_t k = l->p0 & 0xffff, half = k / 2, bins = half + 1, stages = l->aux, q = l->c_in >> stages;
    const int16_t *spectra = (const int16_t *)(base + l->w_off), *forward = (const int16_t *)(base + l->x_off);
    const int16_t *inverse = forward + l->x_bytes / 4;          /* the forward tables are half of them */
    int32_t *xr = scratch, *xi = xr + q * bins, *re = xi + q * bins, *im = re + k;
    for (uint32_t j = 0; j < q; j++) {
        for (uint32_t t = 0; t < k; t++) {
            re[t] = shl(x[j * k + t], l->p2);
            im[t] = 0;
        }
        fft16(re, im, k, stages, forward, 0);
        for (uint32_t b = 0; b < bins; b++) {
            uint32_t at = bit_reverse(b, stages);
            xr[j * bins + b] = re[at];
            xi[j * bins + b] = im[at];
        }
    }
    for (uint32_t i = 0; i < l->c_out >> stages; i++) {
        for (uint32_t b = 0; b < bins; b++) {
            int32_t acc_r = 0, acc_i = 0;
            const int16_t *s = spectra + i * q * k;
            for (uint32_t j = 0; j < q; j++, s += k) {
                int32_t sr = s[b], si = (b == 0 || b == half) ? 0 : s[half + b];
                int32_t vr = xr[j * bins + b], vi = xi[j * bins + b];
                acc_r += vr * sr - vi * si;
                acc_i += vr * si + vi * sr;
            }
            re[b] = sat16(round_shift(acc_r, l->p1));
            im[b] = sat16(round_shift(acc_i, l->p1));
        }
        for (uint32_t b = 1; b < half; b++) {             /* Hermitian: Z[k − b] = conj(Z[b]), saturated */
            re[k - b] = re[b];
            im[k - b] = im[b] < -32767 ? 32767 : -im[b];
        }
        fft16(re, im, k, stages, inverse, 1);
        for (uint32_t t = 0; t < k; t++)
            y[i * k + t] = re[bit_reverse(t, stages)];
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
    int32_t *x = arena, *y = arena + m->max_activation, *scratch = arena + 2 * m->max_activation;
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
                conv2d(l, base, x, y, scratch);
            else if (RUNTIME_HAS(METHOD_CIRCULANT) && l->method == METHOD_CIRCULANT)
                circulant(l, base, x, y, scratch);
            else
                linear(l, base, x, y, scratch);
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
