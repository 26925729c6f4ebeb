/* Digits CNN on the SoC: every test image through the software path (all layers on the CPU) and through
 * the accelerator path (conv2 on the QGP convolution peripheral, fc1 and fc2 on the dense peripherals;
 * conv1 and the pooling stay on the CPU), with cycle counts.
 *
 * Output, one line per image:
 *   img <n> sw <class> <cycles> acc <class> <cycles> conv2 <sw cycles> <acc cycles> conv1 <cycles>
 *   scores <s0> ... <s9>
 * (scores of the accelerator path), then "done <errors>". Both paths run the same conv1 and pooling code
 * and the software layers use multiply-free int8 products (mul8, quarter squares). */
#include "runtime.h"
#include "model.h"      /* generated from the model file: weights, shifts, images */

/* conv1 output, pixel-major with the 8 channels of a pixel in two aligned words (the accelerator's input
 * format), and a zero border for conv2's padding */
static int8_t act1[10][10][8] __attribute__((aligned(4)));
static int32_t acc2[16][8][8];
static int8_t act2[256] __attribute__((aligned(4)));
static int8_t act3[64] __attribute__((aligned(4)));
static int32_t acc3[64];
static int32_t scores[10];

static const uint8_t TAP_ROW[16] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0};   /* no divider */

static int8_t requant(int32_t acc, unsigned shift) {
    if (acc <= 0)
        return 0;                                       /* ReLU */
    int32_t r = shift ? (acc + (1 << (shift - 1))) >> shift : acc;
    return r > 127 ? 127 : (int8_t)r;
}

static void conv1(const int8_t *img) {
    for (int o = 0; o < 8; o++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
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

static void conv2_software(void) {
    for (int o = 0; o < 16; o++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int32_t acc = 0;
                for (int ci = 0; ci < 8; ci++) {
                    uint8_t code = CONV2_CODES[o][ci];
                    int tap = code & 15, r = TAP_ROW[tap], c = tap - 3 * r;
                    int32_t v = act1[y + r][x + c][ci];
                    acc += (code & 16) ? -v : v;
                }
                acc2[o][y][x] = acc;
            }
}

static int conv2_accel(void) {
    CONV_CTRL = CONV_CTRL_START_MASK;
    int sent = 0, got = 0;
    int32_t *out = &acc2[0][0][0];
    /* Pixels in raster order, 8 channels = 2 words; outputs come pixel-major, channel-minor. The FIFO
     * levels say how many words can go in and come out without polling each one. */
    while (got < 16 * 64) {
        uint32_t levels = CONV_LEVELS;
        int room = (levels & CONV_LEVELS_IN_FREE_MASK) >> CONV_LEVELS_IN_FREE_SHIFT;
        int ready = (levels & CONV_LEVELS_OUT_LEVEL_MASK) >> CONV_LEVELS_OUT_LEVEL_SHIFT;
        for (; room && sent < 64 * 2; room--, sent++) {
            int p = sent >> 1;
            CONV_IN_DATA = ((const uint32_t *)act1[(p >> 3) + 1][(p & 7) + 1])[sent & 1];
        }
        for (; ready; ready--, got++)
            out[(got & 15) * 64 + (got >> 4)] = (int32_t)CONV_OUT_DATA;
    }
    return (CONV_STATUS & (CONV_STATUS_ERR_OVERFLOW_MASK | CONV_STATUS_ERR_NO_WEIGHTS_MASK)) ? 1 : 0;
}

static void pool(void) {
    for (int o = 0; o < 16; o++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) {
                int32_t s = acc2[o][2 * y][2 * x] + acc2[o][2 * y + 1][2 * x] + acc2[o][2 * y][2 * x + 1]
                            + acc2[o][2 * y + 1][2 * x + 1];
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

/* The two fully connected peripherals have the same registers: reach either through this table. The
 * field masks are those of FC1 (the register classes, and so the fields, are shared). */
struct dense {
    volatile uint32_t *ctrl, *status, *levels, *w_addr, *w_data, *in_data, *out_data;
};
#define DENSE(P) {&P##_CTRL, &P##_STATUS, &P##_LEVELS, &P##_W_ADDR, &P##_W_DATA, &P##_IN_DATA, &P##_OUT_DATA}
static const struct dense FC1 = DENSE(FC1), FC2 = DENSE(FC2);

/* Weights of an m × n layer, `lanes` rows per word: word g·n + c holds column c of rows g·lanes … */
static void dense_load(const struct dense *d, const int8_t *w, int m, int n, int lanes) {
    *d->ctrl = FC1_CTRL_CLEAR_MASK;
    *d->w_addr = 0;
    for (int row = 0; row < m; row += lanes, w += lanes * n)
        for (int c = 0; c < n; c++) {
            uint32_t word = 0;
            for (int l = 0; l < lanes; l++)
                word |= (uint32_t)(uint8_t)w[l * n + c] << (8 * l);
            *d->w_data = word;
        }
}

/* y = W @ x on the peripheral: n int8 inputs (four per word), m accumulators back. */
static int dense_run(const struct dense *d, const int8_t *x, int n, int32_t *y, int m) {
    const uint32_t *words = (const uint32_t *)x;
    int sent = 0, got = 0;
    while (got < m) {
        uint32_t levels = *d->levels;
        int room = (levels & FC1_LEVELS_IN_FREE_MASK) >> FC1_LEVELS_IN_FREE_SHIFT;
        int ready = (levels & FC1_LEVELS_OUT_LEVEL_MASK) >> FC1_LEVELS_OUT_LEVEL_SHIFT;
        for (; room && sent < (n >> 2); room--, sent++)
            *d->in_data = words[sent];
        for (; ready; ready--, got++)
            y[got] = (int32_t)*d->out_data;
    }
    return (*d->status & (FC1_STATUS_ERR_OVERFLOW_MASK | FC1_STATUS_ERR_ADDRESS_MASK)) ? 1 : 0;
}

static int fc_accel(void) {
    int errors = dense_run(&FC1, act2, 256, acc3, 64);
    for (int o = 0; o < 64; o++)
        act3[o] = requant(acc3[o], FC1_SHIFT);
    return errors + dense_run(&FC2, act3, 64, scores, 10);
}

static int argmax(void) {
    int best = 0;
    for (int i = 1; i < 10; i++)
        if (scores[i] > scores[best])
            best = i;
    return best;
}

static void load_weights(void) {
    dense_load(&FC1, &FC1_W[0][0], 64, 256, FC1_LANES);
    dense_load(&FC2, &FC2_W[0][0], 10, 64, FC2_LANES);
    CONV_CTRL = CONV_CTRL_CLEAR_MASK;
    for (int o = 0; o < 16; o++) {
        for (int ci = 0; ci < 8; ci++)
            CONV_W_STAGE = CONV2_CODES[o][ci];
        CONV_W_COMMIT = ((uint32_t)(o / CONV_PARALLEL) << CONV_W_COMMIT_GROUP_SHIFT)
                        | ((uint32_t)(o % CONV_PARALLEL) << CONV_W_COMMIT_LANE_SHIFT);
    }
}

int main(void) {
    int errors = 0;
    mul8_init();
    load_weights();
    for (int n = 0; n < NUM_IMAGES; n++) {
        uint64_t t0 = cycles();
        conv1(IMAGES[n]);
        uint64_t c0 = cycles();
        conv2_software();
        uint64_t c1 = cycles();
        pool();
        fc_software();
        uint64_t t1 = cycles();
        int sw = argmax();
        uint64_t t2 = cycles();
        conv1(IMAGES[n]);
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
        uart_puts(" scores");
        for (int i = 0; i < 10; i++) {
            uart_putc(' ');
            if (scores[i] < 0) {
                uart_putc('-');
                uart_putdec((uint32_t)(-scores[i]));
            } else {
                uart_putdec((uint32_t)scores[i]);
            }
        }
        uart_putc('\n');
    }
    uart_puts("done ");
    uart_putdec((uint32_t)errors);
    uart_putc('\n');
    return errors;
}
