/* Host protocol, link layer: see insitu.soc.protocol for the frame format and the delivery rules. */
#include "runtime.h"
#include "link.h"

#define FRAME_MAX (4 + PROTO_MAX_PAYLOAD + 4)          /* header, payload, CRC */
#define WIRE_MAX (FRAME_MAX + FRAME_MAX / 254 + 2)     /* COBS overhead and the closing zero */

static uint8_t wire_in[WIRE_MAX], frame_in[FRAME_MAX];
static uint8_t frame_out[FRAME_MAX], wire_out[WIRE_MAX];
static size_t wire_out_len;
static int have_last;
static uint8_t last_command, last_seq;

/* CRC-32 (IEEE 802.3, as zlib.crc32), reflected, a byte per step from a table built at the first call. */
static uint32_t crc_table[256];

uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t n) {
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int b = 0; b < 8; b++)
                c = (c >> 1) ^ (c & 1 ? PROTO_CRC_POLY : 0);
            crc_table[i] = c;
        }
    crc = ~crc;
    while (n--)
        crc = (crc >> 8) ^ crc_table[(crc ^ *data++) & 0xff];
    return ~crc;
}

static size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out) {
    size_t code_at = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            if (++code == 0xff) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

/* Decoded length, or -1 when the bytes are not COBS or do not fit. */
static int cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint8_t code = in[i++];
        if (code == 0)
            return -1;
        for (uint8_t k = 1; k < code; k++) {
            if (i >= n || o >= cap)
                return -1;
            out[o++] = in[i++];
        }
        if (code != 0xff && i < n) {
            if (o >= cap)
                return -1;
            out[o++] = 0;
        }
    }
    return (int)o;
}

static void send_bytes(const uint8_t *wire, size_t n) {
    for (size_t i = 0; i < n; i++)
        uart_putc((char)wire[i]);
}

/* Frame command, seq and the payload (a status byte first when status >= 0) into wire; returns its length. */
static size_t build_frame(uint8_t *wire, uint8_t command, uint8_t seq, int status, const uint8_t *payload, size_t n) {
    size_t at = 4;
    frame_out[0] = command;
    frame_out[1] = seq;
    if (status >= 0)
        frame_out[at++] = (uint8_t)status;
    memcpy(frame_out + at, payload, n);
    at += n;
    put16(frame_out + 2, (uint32_t)(at - 4));
    put32(frame_out + at, crc32_update(0, frame_out, at));
    size_t len = cobs_encode(frame_out, at + 4, wire);
    wire[len++] = 0;
    return len;
}

void link_receive(struct request *req) {
    for (;;) {
        size_t n = 0;
        int overflow = 0, c;
        while ((c = uart_getc()) != 0) {
            if (c < 0)
                continue;
            if (n < WIRE_MAX)
                wire_in[n++] = (uint8_t)c;
            else
                overflow = 1;
        }
        if (n == 0)
            continue;                                   /* an empty frame: a lone zero, resynchronising */
        int len = overflow ? -1 : cobs_decode(wire_in, n, frame_in, FRAME_MAX);
        if (len < 8 || get16(frame_in + 2) != (uint32_t)len - 8 ||
                crc32_update(0, frame_in, (size_t)len - 4) != get32(frame_in + len - 4)) {
            uint8_t nak[16];                            /* a NAK is not a reply: the last reply is kept */
            send_bytes(nak, build_frame(nak, PROTO_NAK, len >= 2 ? frame_in[1] : 0, -1, 0, 0));
            continue;
        }
        if (have_last && frame_in[0] == last_command && frame_in[1] == last_seq) {
            send_bytes(wire_out, wire_out_len);         /* a repeat: our reply was lost or late */
            continue;
        }
        req->command = frame_in[0];
        req->seq = frame_in[1];
        req->length = get16(frame_in + 2);
        req->payload = frame_in + 4;
        last_command = req->command;
        last_seq = req->seq;
        have_last = 0;                                  /* until link_reply */
        return;
    }
}

void link_reply(uint8_t status, const uint8_t *data, size_t n) {
    if (!data || n > PROTO_MAX_PAYLOAD - 1)
        n = 0;
    wire_out_len = build_frame(wire_out, last_command | PROTO_REPLY, last_seq, status, data, n);
    send_bytes(wire_out, wire_out_len);
    have_last = 1;
}
