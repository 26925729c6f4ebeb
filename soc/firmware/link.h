/* The firmware side of the host protocol (insitu.soc.protocol): COBS frames with CRC-32 over the UART,
 * stop and wait, the last reply kept and sent again for a repeated request. */
#ifndef INSITU_LINK_H
#define INSITU_LINK_H

#include <stddef.h>
#include <stdint.h>
#include "protocol.h"   /* generated from insitu.soc.protocol: command and status numbers */

struct request {
    uint8_t command, seq;
    uint16_t length;
    const uint8_t *payload;     /* valid until the next link_receive */
};

uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t n);   /* crc: 0 to start */
void link_receive(struct request *req);                               /* blocks for the next new request */
void link_reply(uint8_t status, const uint8_t *data, size_t n);       /* answers the last request */

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

#endif
