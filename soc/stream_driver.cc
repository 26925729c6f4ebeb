/* A stream block compiled with CXXRTL, driven like insitu.hdl.testing.simulate_stream: payloads go into
 * one input stream and come out of one output stream, with seeded random stalls on both sides. Other
 * input ports can be set to constants. Loaded with ctypes by insitu.soc.compiled_stream. */
#include <cxxrtl/capi/cxxrtl_capi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" cxxrtl_toplevel cxxrtl_design_create();

struct stream_port {
    cxxrtl_object *valid, *ready, *payload;
    size_t chunks;                         /* 32-bit words per payload */
};

struct block {
    cxxrtl_handle handle;
    cxxrtl_object *clk, *rst;
    stream_port in, out;
    int has_in;
    uint64_t rng;
};

static int bind(cxxrtl_handle h, const char *prefix, stream_port *p) {
    char name[256];
    snprintf(name, sizeof name, "%s__valid", prefix);
    p->valid = cxxrtl_get(h, name);
    snprintf(name, sizeof name, "%s__ready", prefix);
    p->ready = cxxrtl_get(h, name);
    snprintf(name, sizeof name, "%s__payload", prefix);
    p->payload = cxxrtl_get(h, name);
    if (!p->valid || !p->ready || !p->payload)
        return 0;
    p->chunks = (p->payload->width + 31) / 32;
    return 1;
}

/* in_prefix "" : the block has no input stream (a source). Returns 0 when a port is missing. */
extern "C" void *block_create(const char *in_prefix, const char *out_prefix) {
    block *b = (block *)calloc(1, sizeof(block));
    b->handle = cxxrtl_create(cxxrtl_design_create());
    b->clk = cxxrtl_get(b->handle, "clk");
    b->rst = cxxrtl_get(b->handle, "rst");
    b->has_in = in_prefix[0] != 0;
    if (!b->clk || !b->rst || (b->has_in && !bind(b->handle, in_prefix, &b->in)) ||
            !bind(b->handle, out_prefix, &b->out)) {
        cxxrtl_destroy(b->handle);
        free(b);
        return 0;
    }
    return b;
}

extern "C" void block_destroy(void *p) {
    block *b = (block *)p;
    cxxrtl_destroy(b->handle);
    free(b);
}

/* Set an input port to a constant (chunks: its 32-bit words, least significant first). */
extern "C" int block_set(void *p, const char *name, const uint32_t *chunks) {
    block *b = (block *)p;
    cxxrtl_object *o = cxxrtl_get(b->handle, name);
    if (!o)
        return 0;
    memcpy(o->next, chunks, 4 * ((o->width + 31) / 32));
    return 1;
}

extern "C" size_t block_chunks(void *p, int output) {
    block *b = (block *)p;
    return output ? b->out.chunks : b->has_in ? b->in.chunks : 0;
}

static double uniform(block *b) {               /* xorshift64* */
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return (double)((b->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static void clock(block *b) {
    b->clk->next[0] = 1;
    cxxrtl_step(b->handle);
    b->clk->next[0] = 0;
    cxxrtl_step(b->handle);
}

/* Reset, then send n_in payloads (in: n_in × in chunks) and receive n_out (out: n_out × out chunks).
 * Before each input transfer valid stays low for a random number of clocks (each with probability
 * stall); ready is low on each clock with probability stall. Returns the clocks from reset to the last
 * output transfer, or -1 after max_cycles. */
extern "C" int64_t block_run(void *p, const uint32_t *in, size_t n_in, uint32_t *out, size_t n_out,
                             uint64_t seed, double stall, uint64_t max_cycles) {
    block *b = (block *)p;
    b->rng = seed * 0x9E3779B97F4A7C15ull + 1;
    b->rst->next[0] = 1;
    clock(b);
    b->rst->next[0] = 0;
    size_t sent = 0, got = 0;
    int holding = 0;
    for (uint64_t cycle = 0; cycle < max_cycles; cycle++) {
        if (b->has_in) {
            if (!holding && sent < n_in && !(stall > 0 && uniform(b) < stall)) {
                memcpy(b->in.payload->next, in + sent * b->in.chunks, 4 * b->in.chunks);
                holding = 1;
            }
            b->in.valid->next[0] = holding;
        }
        b->out.ready->next[0] = !(stall > 0 && uniform(b) < stall);
        cxxrtl_step(b->handle);                   /* the combinational outputs for these inputs */
        int in_fire = holding && (b->in.ready->curr[0] & 1);
        int out_fire = (b->out.ready->curr[0] & 1) && (b->out.valid->curr[0] & 1);
        if (out_fire && got < n_out)
            memcpy(out + got * b->out.chunks, b->out.payload->curr, 4 * b->out.chunks);
        clock(b);
        if (in_fire) {
            holding = 0;
            sent++;
        }
        if (out_fire && ++got == n_out)
            return (int64_t)cycle + 1;
    }
    return -1;
}
