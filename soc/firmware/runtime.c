#include "runtime.h"

void uart_putc(char c) {
    while (UART_STATUS & UART_STATUS_TX_FULL_MASK)
        ;
    UART_TX = (uint8_t)c;
}

void uart_puts(const char *s) {
    while (*s)
        uart_putc(*s++);
}

void uart_putdec(uint32_t v) {
    /* Powers of ten by subtraction: RV32I has no divide instruction. */
    static const uint32_t tens[] = {1000000000u, 100000000u, 10000000u, 1000000u, 100000u,
                                    10000u, 1000u, 100u, 10u, 1u};
    int started = 0;
    for (int i = 0; i < 10; i++) {
        char digit = '0';
        while (v >= tens[i]) {
            v -= tens[i];
            digit++;
        }
        if (digit != '0' || started || i == 9) {
            uart_putc(digit);
            started = 1;
        }
    }
}

void uart_puthex(uint32_t v) {
    for (int i = 28; i >= 0; i -= 4)
        uart_putc("0123456789abcdef"[(v >> i) & 15]);
}

uint64_t cycles(void) {
    uint32_t lo = TIMER_CYCLES_LO;     /* latches the high word */
    return ((uint64_t)TIMER_CYCLES_HI << 32) | lo;
}

void insitu_exit(int code) {
    while (!(UART_STATUS & UART_STATUS_TX_EMPTY_MASK))
        ;
    SYS_SIM_EXIT = (uint32_t)code;
    for (;;)
        ;
}

/* RV32I has no multiply instruction: the compiler calls __mulsi3. Shift-and-add over the smaller
 * magnitude, so the int8 products of the network take at most 8 iterations. */
int __mulsi3(int a, int b) {
    unsigned ua = a < 0 ? 0u - (unsigned)a : (unsigned)a;
    unsigned ub = b < 0 ? 0u - (unsigned)b : (unsigned)b;
    if (ub > ua) {
        unsigned t = ua;
        ua = ub;
        ub = t;
    }
    unsigned r = 0;
    while (ub) {
        if (ub & 1u)
            r += ua;
        ua <<= 1;
        ub >>= 1;
    }
    return ((a < 0) != (b < 0)) ? -(int)r : (int)r;
}

void *memset(void *dst, int c, unsigned n) {
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

void *memcpy(void *dst, const void *src, unsigned n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

uint16_t insitu_quarter_squares[256];

void mul8_init(void) {
    uint32_t square = 0;                       /* n², by (n+1)² = n² + 2n + 1 */
    for (uint32_t n = 0; n < 256; n++) {
        insitu_quarter_squares[n] = (uint16_t)(square >> 2);
        square += 2 * n + 1;
    }
}
