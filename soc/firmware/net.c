/* Digits CNN on the SoC: every test image through the software path (all layers on the CPU) and through
 * the accelerator path (conv1 on the dense convolution peripheral, conv2 on the QGP one, fc1 and fc2 on
 * the dense fully connected ones; the conv1 and fc1 peripherals also requantise, conv2's requantisation
 * after the pooling stays on the CPU), with cycle counts.
 *
 * Output, one line per image:
 *   img <n> sw <class> <cycles> acc <class> <cycles> conv2 <sw cycles> <acc cycles>
 *   conv1 <sw cycles> <acc cycles> scores <s0> ... <s9>
 * (scores of the accelerator path), then "done <errors>". The software layers use multiply-free int8
 * products (mul8, quarter squares); both paths share the requantisation and pooling code. */
#include "runtime.h"
#include "model.h"      /* generated from the model file: weights, shifts, images */

/* conv1 output, pixel-major with the 8 channels of a pixel in two aligned words (the peripheral's input
 * format), and a zero border for conv2's padding */
static int8_t act1[10][10][8] __attribute__((aligned(4)));
/* the same without the border, for the peripherals (which pad by themselves): conv1's peripheral writes
 * it and conv2's reads it, two words per pixel, with no copying */
static int8_t act1_dense[64][8] __attribute__((aligned(4)));
/* conv2 accumulators, pixel-major; |acc| <= 8 · 127 fits int16, and two int16 per word is also the
 * peripheral's paired output format, so its words land here unchanged */
static int16_t acc2[64][16] __attribute__((aligned(4)));
static int8_t act2[256] __attribute__((aligned(4)));
static int8_t act3[64] __attribute__((aligned(4)));
static int32_t scores[10];
static uint32_t in_words[64];         /* conv1's input, one pixel per word */

static const uint8_t TAP_ROW[16] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0};   /* no divider */

static int8_t requant(int32_t acc, unsigned shift) {
    if (acc <= 0)
        return 0;                                       /* ReLU */
    int32_t r = shift ? (acc + (1 << (shift - 1))) >> shift : acc;
    return r > 127 ? 127 : (int8_t)r;
}

/* -- software layers -------------------------------------------------------------------------------- */

static void conv1_software(const int8_t *img) {
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++)
            for (int o = 0; o < 8; o++) {
                int32_t acc = 0;
                for (int r = 0; r < 3; r++)
                    for (int c = 0; c < 3; c++) {
                        int yy = y + r - 1, xx = x + c - 1;
                        if (yy >= 0 && yy < 8 && xx >= 0 && xx < 8)
                            acc += mul8(CONV1_W[o][r * 3 + c], img[yy * 8 + xx]);
                    }
                act1[y + 1][x + 1][o] = requant(acc, CONV1_SHIFT);
            }
}

/* conv2 in software: per (output, input) channel the kept tap as an offset into act1 from the window's
 * top-left pixel, and its sign, decoded once from the codes (part of loading the weights). */
static uint16_t C2_OFFSET[16][8];
static uint8_t C2_NEGATE[16][8];

static void conv2_prepare(void) {
    for (int o = 0; o < 16; o++)
        for (int ci = 0; ci < 8; ci++) {
            uint8_t code = CONV2_CODES[o][ci];
            int tap = code & 15, r = TAP_ROW[tap], c = tap - 3 * r;
            C2_OFFSET[o][ci] = (uint16_t)((r << 6) + (r << 4) + (c << 3) + ci);    /* r·80 + c·8 + ci */
            C2_NEGATE[o][ci] = (code >> 4) & 1;
        }
}

static void conv2_software(void) {
    for (int o = 0; o < 16; o++) {
        const uint16_t *offset = C2_OFFSET[o];
        const uint8_t *negate = C2_NEGATE[o];
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                const int8_t *window = &act1[y][x][0];
                int32_t acc = 0;
                for (int ci = 0; ci < 8; ci++) {
                    int32_t v = window[offset[ci]];
                    acc += negate[ci] ? -v : v;
                }
                acc2[y * 8 + x][o] = (int16_t)acc;
            }
    }
}

static void pool(void) {
    for (int o = 0; o < 16; o++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) {
                int p = 16 * y + 2 * x;                 /* pixel (2y, 2x) */
                int32_t s = acc2[p][o] + acc2[p + 1][o] + acc2[p + 8][o] + acc2[p + 9][o];
                act2[o * 16 + y * 4 + x] = requant(s, CONV2_SHIFT);
            }
}

static void fc_software(void) {
    for (int o = 0; o < 64; o++) {
        int32_t acc = 0;
        const int8_t *w = FC1_W[o];
        for (int i = 0; i < 256; i++)
            if (act2[i])
                acc += mul8(w[i], act2[i]);
        act3[o] = requant(acc, FC1_SHIFT);
    }
    for (int o = 0; o < 10; o++) {
        int32_t acc = 0;
        for (int i = 0; i < 64; i++)
            if (act3[i])
                acc += mul8(FC2_W[o][i], act3[i]);
        scores[o] = acc;
    }
}

/* -- convolution peripherals ------------------------------------------------------------------------ */

/* Both convolution peripherals have the same registers; the field masks used are those of CONV2. */
struct conv {
    volatile uint32_t *ctrl, *status, *levels, *out_cfg, *w_stage, *w_commit, *in_data, *out_data;
};
#define CONV_REGS(P) {&P##_CTRL, &P##_STATUS, &P##_LEVELS, &P##_OUT_CFG, &P##_W_STAGE, &P##_W_COMMIT, \
                      &P##_IN_DATA, &P##_OUT_DATA}
static const struct conv CONV1_ACC = CONV_REGS(CONV1), CONV2_ACC = CONV_REGS(CONV2);

/* c_out output channels of `per_channel` stage writes each; output channel o is lane o % parallel of
 * group o / parallel. out_cfg: 0 for raw accumulators, packed ReLU-requantised outputs, or int16 pairs. */
static void conv_load(const struct conv *c, const uint8_t *codes, int c_out, int per_channel, int parallel,
                      uint32_t out_cfg) {
    *c->ctrl = CONV2_CTRL_CLEAR_MASK;
    *c->out_cfg = out_cfg;
    for (int o = 0, group = 0, lane = 0; o < c_out; o++) {
        for (int i = 0; i < per_channel; i++)
            *c->w_stage = *codes++;
        *c->w_commit = ((uint32_t)group << CONV2_W_COMMIT_GROUP_SHIFT) | ((uint32_t)lane << CONV2_W_COMMIT_LANE_SHIFT);
        if (++lane == parallel) {
            lane = 0;
            group++;
        }
    }
}

/* One frame: n_words input words in, n_out words back (accumulators or packed outputs, pixel-major,
 * channel-minor). The FIFO levels say how many words can go in and come out without polling each one. */
static int conv_run(const struct conv *c, const uint32_t *in, int n_words, uint32_t *out, int n_out) {
    *c->ctrl = CONV2_CTRL_START_MASK;
    int sent = 0, got = 0;
    while (got < n_out) {
        uint32_t levels = *c->levels;
        int room = (levels & CONV2_LEVELS_IN_FREE_MASK) >> CONV2_LEVELS_IN_FREE_SHIFT;
        int ready = (levels & CONV2_LEVELS_OUT_LEVEL_MASK) >> CONV2_LEVELS_OUT_LEVEL_SHIFT;
        for (; room && sent < n_words; room--, sent++)
            *c->in_data = in[sent];
        for (; ready; ready--, got++)
            out[got] = *c->out_data;
    }
    return (*c->status & (CONV2_STATUS_ERR_OVERFLOW_MASK | CONV2_STATUS_ERR_NO_WEIGHTS_MASK)) ? 1 : 0;
}

static int conv1_accel(const int8_t *img) {
    for (int p = 0; p < 64; p++)
        in_words[p] = (uint8_t)img[p];                  /* one channel: byte 0 of the word */
    /* ReLU + requantised by the peripheral, 8 channels = 2 words per pixel */
    return conv_run(&CONV1_ACC, in_words, 64, (uint32_t *)act1_dense, 128);
}

static int conv2_accel(void) {
    return conv_run(&CONV2_ACC, (const uint32_t *)act1_dense, 128, (uint32_t *)&acc2[0][0], 512);  /* int16 pairs */
}

/* -- fully connected peripherals -------------------------------------------------------------------- */

/* The two fully connected peripherals have the same registers; the field masks used are those of FC1. */
struct dense {
    volatile uint32_t *ctrl, *status, *levels, *out_cfg, *w_addr, *w_data, *in_data, *out_data;
};
#define DENSE(P) {&P##_CTRL, &P##_STATUS, &P##_LEVELS, &P##_OUT_CFG, &P##_W_ADDR, &P##_W_DATA, &P##_IN_DATA, \
                  &P##_OUT_DATA}
static const struct dense FC1 = DENSE(FC1), FC2 = DENSE(FC2);

/* Weights of an m × n layer, `lanes` rows per word: word g·n + c holds column c of rows g·lanes … */
static void dense_load(const struct dense *d, const int8_t *w, int m, int n, int lanes, uint32_t out_cfg) {
    *d->ctrl = FC1_CTRL_CLEAR_MASK;
    *d->out_cfg = out_cfg;
    *d->w_addr = 0;
    for (int row = 0; row < m; row += lanes, w += lanes * n)
        for (int c = 0; c < n; c++) {
            uint32_t word = 0;
            for (int l = 0; l < lanes; l++)
                word |= (uint32_t)(uint8_t)w[l * n + c] << (8 * l);
            *d->w_data = word;
        }
}

/* y = W @ x on the peripheral: n int8 inputs (four per word), m words back (accumulators, or packed
 * outputs as out_cfg says). */
static int dense_run(const struct dense *d, const int8_t *x, int n, uint32_t *y, int m) {
    const uint32_t *words = (const uint32_t *)x;
    int sent = 0, got = 0;
    while (got < m) {
        uint32_t levels = *d->levels;
        int room = (levels & FC1_LEVELS_IN_FREE_MASK) >> FC1_LEVELS_IN_FREE_SHIFT;
        int ready = (levels & FC1_LEVELS_OUT_LEVEL_MASK) >> FC1_LEVELS_OUT_LEVEL_SHIFT;
        for (; room && sent < (n >> 2); room--, sent++)
            *d->in_data = words[sent];
        for (; ready; ready--, got++)
            y[got] = *d->out_data;
    }
    return (*d->status & (FC1_STATUS_ERR_OVERFLOW_MASK | FC1_STATUS_ERR_ADDRESS_MASK)) ? 1 : 0;
}

static int fc_accel(void) {
    int errors = dense_run(&FC1, act2, 256, (uint32_t *)act3, 16);    /* ReLU + requantised, 4 per word */
    return errors + dense_run(&FC2, act3, 64, (uint32_t *)scores, 10);
}

/* -------------------------------------------------------------------------------------------------- */

static int argmax(void) {
    int best = 0;
    for (int i = 1; i < 10; i++)
        if (scores[i] > scores[best])
            best = i;
    return best;
}

static void put_signed(int32_t v) {
    if (v < 0) {
        uart_putc('-');
        v = -v;
    }
    uart_putdec((uint32_t)v);
}

int main(void) {
    int errors = 0;
    mul8_init();
    conv2_prepare();
    conv_load(&CONV1_ACC, (const uint8_t *)&CONV1_W[0][0], 8, 9, CONV1_PARALLEL,
              CONV2_OUT_CFG_PACK_MASK | ((uint32_t)CONV1_SHIFT << CONV2_OUT_CFG_SHIFT_SHIFT));
    conv_load(&CONV2_ACC, &CONV2_CODES[0][0], 16, 8, CONV2_PARALLEL, CONV2_OUT_CFG_PAIR_MASK);
    dense_load(&FC1, &FC1_W[0][0], 64, 256, FC1_LANES,
               FC1_OUT_CFG_PACK_MASK | ((uint32_t)FC1_SHIFT << FC1_OUT_CFG_SHIFT_SHIFT));
    dense_load(&FC2, &FC2_W[0][0], 10, 64, FC2_LANES, 0);
    for (int n = 0; n < NUM_IMAGES; n++) {
        uint64_t t0 = cycles();
        conv1_software(IMAGES[n]);
        uint64_t c0 = cycles();
        conv2_software();
        uint64_t c1 = cycles();
        pool();
        fc_software();
        uint64_t t1 = cycles();
        int sw = argmax();
        uint64_t t2 = cycles();
        errors += conv1_accel(IMAGES[n]);
        uint64_t c2 = cycles();
        errors += conv2_accel();
        uint64_t c3 = cycles();
        pool();
        errors += fc_accel();
        uint64_t t3 = cycles();
        int acc = argmax();
        uart_puts("img ");
        uart_putdec((uint32_t)n);
        uart_puts(" sw ");
        uart_putdec((uint32_t)sw);
        uart_putc(' ');
        uart_putdec((uint32_t)(t1 - t0));
        uart_puts(" acc ");
        uart_putdec((uint32_t)acc);
        uart_putc(' ');
        uart_putdec((uint32_t)(t3 - t2));
        uart_puts(" conv2 ");
        uart_putdec((uint32_t)(c1 - c0));
        uart_putc(' ');
        uart_putdec((uint32_t)(c3 - c2));
        uart_puts(" conv1 ");
        uart_putdec((uint32_t)(c0 - t0));
        uart_putc(' ');
        uart_putdec((uint32_t)(c2 - t2));
        uart_puts(" scores");
        for (int i = 0; i < 10; i++) {
            uart_putc(' ');
            put_signed(scores[i]);
        }
        uart_putc('\n');
    }
    uart_puts("done ");
    uart_putdec((uint32_t)errors);
    uart_putc('\n');
    return errors;
}
