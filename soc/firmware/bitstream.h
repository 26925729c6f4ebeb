/* Reading the blob's bit streams (insitu.soc.modelblob): bit n of a stream is bit n mod 32 of word n / 32
 * (the packed images' LSB-first order). Reads past the end give zeros and stay at the end. */
#ifndef INSITU_BITSTREAM_H
#define INSITU_BITSTREAM_H

#include <stdint.h>

struct bits {
    const uint32_t *word;
    uint32_t pos, end;
};

static inline uint32_t take(struct bits *b, uint32_t n) {          /* the next n (1…16) bits, unsigned */
    if (b->pos + n > b->end) {
        b->pos = b->end;
        return 0;
    }
    uint32_t i = b->pos >> 5, at = b->pos & 31, v = b->word[i] >> at;
    if (at + n > 32)
        v |= b->word[i + 1] << (32 - at);
    b->pos += n;
    return v & ((1u << n) - 1);
}

static inline int32_t take_signed(struct bits *b, uint32_t n) {   /* two's complement */
    uint32_t v = take(b, n);
    return (v >> (n - 1)) ? (int32_t)v - (int32_t)(1u << n) : (int32_t)v;
}

#endif
