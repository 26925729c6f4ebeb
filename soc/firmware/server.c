/* The insitu runtime's main program: answers the host protocol (insitu.soc.protocol) and runs models
 * (insitu.soc.modelblob) with the layer interpreter. A model baked in at build time (model_blob.h, with
 * INSITU_BAKED_MODEL defined) is ready at reset; the host may load another over the UART. */
#include "runtime.h"
#include "link.h"
#include "interp.h"
#include "accel.h"

#ifndef STACK_RESERVE
#define STACK_RESERVE 2048
#endif

#ifdef INSITU_BAKED_MODEL
#include "model_blob.h"             /* BAKED_MODEL (uint32_t words), BAKED_MODEL_BYTES */
#endif

/* The RAM between the image (code, data, .bss) and the stack, split at start-up: images, results, then one
 * span for a model loaded over the UART followed by the running model's working memory (its arena: the
 * activations and the compressed layers' scratch), which starts where the model ends. A baked model's
 * weights are in the image, so its arena is the whole span. */
extern uint8_t __image_end[], __stack_top[];
static uint32_t *model_region, *input_region;
static int32_t *arena;
static uint8_t *results;
static uint32_t SPAN_BYTES, INPUT_CAPACITY, RESULT_BYTES;

static uint32_t min32(uint32_t a, uint32_t b) { return a < b ? a : b; }

static void split_ram(void) {
    uint32_t start = ((uint32_t)(uintptr_t)__image_end + 3) & ~3u;
    uint32_t free = (uint32_t)(uintptr_t)__stack_top - STACK_RESERVE - start;
    INPUT_CAPACITY = min32(8192, free / 8) & ~3u;
    RESULT_BYTES = min32(4096, free / 16) & ~3u;
    SPAN_BYTES = (free - INPUT_CAPACITY - RESULT_BYTES) & ~3u;
    input_region = (uint32_t *)(uintptr_t)start;
    results = (uint8_t *)(uintptr_t)(start + INPUT_CAPACITY);
    model_region = (uint32_t *)(uintptr_t)(start + INPUT_CAPACITY + RESULT_BYTES);
    arena = (int32_t *)model_region;
}
static int32_t scores[PROTO_MAX_PAYLOAD / 4];
static uint8_t reply[PROTO_MAX_PAYLOAD];

static struct model_info model;
static int have_model;
static uint16_t baked_status = STATUS_NO_MODEL;     /* the baked model's COMMIT status (NO_MODEL: none) */

static uint32_t result_size(void) { return 5 + 4 * model.outputs; }

static void hello(void) {
    uint32_t caps = CAP_SOFTWARE_PATH | (PERIPH_COUNT ? CAP_ACCELERATOR_PATH : 0) |
                    (uint32_t)RUNTIME_METHODS_MASK << CAP_METHODS_SHIFT;
#ifdef INSITU_BAKED_MODEL
    caps |= CAP_BAKED_MODEL;
#endif
    put16(reply, PROTO_VERSION);
    put16(reply + 2, PROTO_MAX_PAYLOAD);
    put32(reply + 4, caps);
    put32(reply + 8, SPAN_BYTES);                /* a loaded model and its working memory */
    put32(reply + 12, INPUT_CAPACITY);
    put16(reply + 16, have_model ? RESULT_BYTES / result_size() : 0);
    put16(reply + 18, baked_status);
    put16(reply + 20, PERIPH_COUNT);
    uint32_t at = 22;
    for (uint32_t i = 0; i < PERIPH_COUNT; i++) {
        const char *name = PERIPHERALS[i].name;
        size_t len = strlen(name);
        if (at + 2 + len > PROTO_MAX_PAYLOAD - 1)
            break;
        reply[at++] = PERIPHERALS[i].kind;
        memcpy(reply + at, name, len + 1);
        at += (uint32_t)len + 1;
    }
    link_reply(STATUS_OK, reply, at);
}

static void write_region(const struct request *req) {
    if (req->length < 8) {
        link_reply(STATUS_MALFORMED, 0, 0);
        return;
    }
    uint32_t region = req->payload[0], offset = get32(req->payload + 4), n = req->length - 8u;
    uint8_t *base = region == REGION_MODEL ? (uint8_t *)model_region : region == REGION_INPUTS ? (uint8_t *)input_region : 0;
    uint32_t cap = region == REGION_MODEL ? SPAN_BYTES : INPUT_CAPACITY;
    if (!base || offset > cap || n > cap - offset) {
        link_reply(STATUS_RANGE, 0, 0);
        return;
    }
    if (region == REGION_MODEL && model.blob == model_region)
        have_model = 0;                         /* being overwritten: COMMIT again */
    memcpy(base + offset, req->payload + 8, n);
    link_reply(STATUS_OK, 0, 0);
}

static int use_model(const uint32_t *blob, uint32_t len) {
    struct model_info info;
    uint32_t used = blob == model_region ? len : 0;        /* the arena starts after a loaded model */
    int status = interp_check(blob, len, SPAN_BYTES - used, &info);
    if (status == STATUS_OK && (info.outputs > PROTO_MAX_PAYLOAD / 4 || 5 + 4 * info.outputs > RESULT_BYTES))
        status = STATUS_NO_ROOM;
    if (status == STATUS_OK) {
        arena = (int32_t *)((uint8_t *)model_region + used);
        model = info;
        interp_bind(&model);
        have_model = 1;
    }
    return status;
}

static void commit(const struct request *req) {
    if (req->length != 8) {
        link_reply(STATUS_MALFORMED, 0, 0);
        return;
    }
    uint32_t len = get32(req->payload), crc = get32(req->payload + 4);
    if (len > SPAN_BYTES || len % 4) {
        link_reply(STATUS_NO_ROOM, 0, 0);
        return;
    }
    if (crc32_update(0, (const uint8_t *)model_region, len) != crc) {
        link_reply(STATUS_BAD_CRC, 0, 0);
        return;
    }
    int status = use_model(model_region, len);
    if (status != STATUS_OK) {
        link_reply((uint8_t)status, 0, 0);
        return;
    }
    put16(reply, model.layers);
    put32(reply + 2, model.input_bytes);
    put16(reply + 6, model.outputs);
    put16(reply + 8, model.accelerated);
    link_reply(STATUS_OK, reply, 10);
}

static uint8_t argmax(const int32_t *v, uint32_t n) {
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return (uint8_t)best;
}

/* INFER's and RESULTS' common part: the request's length, a model, and the image range [first, first +
 * count) (first u16, count u16) within `limit` results of `bytes` each. Replies and returns 0 otherwise. */
static int image_range(const struct request *req, uint32_t length, uint32_t bytes, uint32_t limit,
                       uint32_t *first, uint32_t *count) {
    if (req->length != length) {
        link_reply(STATUS_MALFORMED, 0, 0);
        return 0;
    }
    if (!have_model) {
        link_reply(STATUS_NO_MODEL, 0, 0);
        return 0;
    }
    *first = get16(req->payload);
    *count = get16(req->payload + 2);
    if ((*first + *count) * bytes > limit) {
        link_reply(STATUS_RANGE, 0, 0);
        return 0;
    }
    return 1;
}

static void infer(const struct request *req) {
    uint32_t first, count, size = result_size();
    if (!image_range(req, 5, size, RESULT_BYTES, &first, &count))
        return;
    if ((first + count) * model.input_bytes > INPUT_CAPACITY) {
        link_reply(STATUS_RANGE, 0, 0);
        return;
    }
    uint64_t total = 0;
    int errors = 0, accelerate = req->payload[4] & 1;
    for (uint32_t n = first; n < first + count; n++) {
        const int8_t *image = (const int8_t *)input_region + n * model.input_bytes;
        uint64_t t0 = cycles();
        errors += interp_run(&model, image, arena, scores, accelerate, 0);
        uint64_t t1 = cycles();
        uint8_t *r = results + n * size;
        r[0] = argmax(scores, model.outputs);
        put32(r + 1, (uint32_t)(t1 - t0));
        for (uint32_t i = 0; i < model.outputs; i++)
            put32(r + 5 + 4 * i, (uint32_t)scores[i]);
        total += t1 - t0;
    }
    if (errors) {
        link_reply(STATUS_ACCEL_ERROR, 0, 0);
        return;
    }
    put16(reply, count);
    put32(reply + 2, (uint32_t)total);
    put32(reply + 6, (uint32_t)(total >> 32));
    link_reply(STATUS_OK, reply, 10);
}

static void read_results(const struct request *req) {
    uint32_t first, count, size = result_size();
    if (!image_range(req, 4, size, RESULT_BYTES, &first, &count))
        return;
    if (count * size > PROTO_MAX_PAYLOAD - 1) {
        link_reply(STATUS_RANGE, 0, 0);
        return;
    }
    link_reply(STATUS_OK, results + first * size, count * size);
}

int main(void) {
    split_ram();
#ifdef INSITU_BAKED_MODEL
    baked_status = (uint16_t)use_model(BAKED_MODEL, BAKED_MODEL_BYTES);
#endif
    struct request req;
    for (;;) {
        link_receive(&req);
        switch (req.command) {
        case CMD_HELLO:
            hello();
            break;
        case CMD_ECHO:
            link_reply(STATUS_OK, req.payload, req.length);
            break;
        case CMD_WRITE:
            write_region(&req);
            break;
        case CMD_COMMIT:
            commit(&req);
            break;
        case CMD_INFER:
            infer(&req);
            break;
        case CMD_RESULTS:
            read_results(&req);
            break;
        default:
            link_reply(STATUS_BAD_COMMAND, 0, 0);
        }
    }
}
