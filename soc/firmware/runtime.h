/* The insitu SoC firmware runtime: UART I/O, cycle counter, exit, a small printf, and the helpers a
 * -nostdlib RV32I program needs (integer multiply, divide and modulo, memcpy and friends).
 *
 * C code written for a hosted system can include <stdio.h>, <string.h> and <stdlib.h> from
 * soc/firmware/include: they declare the subset implemented here. */
#ifndef INSITU_RUNTIME_H
#define INSITU_RUNTIME_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "regs.h"   /* generated from the Python register map */
/* the headers in soc/firmware/include come first on the include path: the runtime's own subset */

/* -- UART ------------------------------------------------------------------------------------------- */
void uart_putc(char c);
void uart_puts(const char *s);                 /* no newline added */
void uart_putdec(uint32_t v);
void uart_puthex(uint32_t v);
int uart_getc(void);                           /* next received byte, or -1 when none is waiting */
int uart_getc_wait(uint32_t max_cycles);       /* waits up to max_cycles clocks; -1 on timeout */

/* -- cycle counter (the timer peripheral, one count per clock since reset) ----------------------------- */
uint64_t cycles(void);
static inline uint32_t cycles32(void) { return TIMER_CYCLES_LO; }   /* low word only: for short intervals */

/* -- exit: flush the UART, then report the code (the simulation stops; hardware spins) ----------------- */
void insitu_exit(int code) __attribute__((noreturn));

/* -- formatted output (<stdio.h>): %d %i %u %x %X %o %c %s %p %%, flags '-' and '0', a width (or '*'),
 *    length modifiers l, ll (64-bit), h, hh, z. No floating point. Returns the number of characters
 *    written. puts adds a newline, as the C library's does.
 * -- memory and strings (<string.h>); exit (= insitu_exit) and abort (exit code 134) (<stdlib.h>). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* int8 × int8 products without a multiplier (RV32I has none): quarter squares,
 * a·b = ⌊(a+b)²/4⌋ − ⌊(a−b)²/4⌋, from a 257-entry table filled by mul8_init() (call it once; calling it
 * again is harmless). Valid for a and b in [-128, 127]. */
extern uint16_t insitu_quarter_squares[257];
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
