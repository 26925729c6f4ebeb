/* Minimal runtime of the insitu SoC firmware: UART output, cycle counter, exit. */
#ifndef INSITU_RUNTIME_H
#define INSITU_RUNTIME_H

#include <stdint.h>
#include "regs.h"   /* generated from the Python register map */

void uart_putc(char c);
void uart_puts(const char *s);
void uart_putdec(uint32_t v);
void uart_puthex(uint32_t v);
uint64_t cycles(void);
void insitu_exit(int code) __attribute__((noreturn));

/* int8 × activation products without a multiplier (RV32I has none): quarter squares,
 * a·b = ⌊(a+b)²/4⌋ − ⌊(a−b)²/4⌋, from a 256-entry table filled by mul8_init().
 * Valid for a in [-128, 127] and b in [0, 127] (weights times post-ReLU activations). */
extern uint16_t insitu_quarter_squares[256];
void mul8_init(void);

static inline int32_t mul8(int32_t a, int32_t b) {
    int32_t s = a + b, d = a - b;
    if (s < 0)
        s = -s;
    if (d < 0)
        d = -d;
    return (int32_t)insitu_quarter_squares[s] - (int32_t)insitu_quarter_squares[d];
}

#endif
