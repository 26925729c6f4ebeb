#include "runtime.h"

/* -- UART ------------------------------------------------------------------------------------------- */

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
    /* Powers of ten by subtraction: cheaper than the division helpers for one number. */
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

int uart_getc(void) {
    if (!(UART_STATUS & UART_STATUS_RX_VALID_MASK))
        return -1;
    return (int)(UART_RX & 0xff);          /* reading pops the byte */
}

int uart_getc_wait(uint32_t max_cycles) {
    uint32_t start = cycles32();
    for (;;) {
        if (UART_STATUS & UART_STATUS_RX_VALID_MASK)
            return (int)(UART_RX & 0xff);
        if (cycles32() - start >= max_cycles)
            return -1;
    }
}

/* -- cycle counter and exit ---------------------------------------------------------------------------- */

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

void exit(int code) { insitu_exit(code); }
void abort(void) { insitu_exit(134); }

/* -- integer arithmetic helpers (RV32I has no multiply or divide instruction; the compiler calls these,
 *    with the names and semantics of compiler-rt/libgcc) ------------------------------------------------- */

/* Shift-and-add over the smaller magnitude, so the int8 products of a network take at most 8 iterations. */
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

long long __muldi3(long long a, long long b) {
    unsigned long long ua = (unsigned long long)a, ub = (unsigned long long)b, r = 0;
    while (ub) {                       /* modulo 2^64, so the signs take care of themselves */
        if (ub & 1u)
            r += ua;
        ua <<= 1;
        ub >>= 1;
    }
    return (long long)r;
}

/* Restoring division, the divisor first aligned under the dividend. Division by zero gives the RISC-V
 * M extension's answers: quotient all ones, remainder the dividend. One definition for both widths. */
#define RESTORING_DIVISION(name, type)                                                 \
    static type name(type n, type d, type *rem) {                                    \
        if (d == 0) {                                                                \
            *rem = n;                                                                \
            return ~(type)0;                                                         \
        }                                                                            \
        type q = 0, bit = 1, top = (type)1 << (8 * sizeof(type) - 1);                \
        while (d < n && !(d & top)) {                                                \
            d <<= 1;                                                                 \
            bit <<= 1;                                                               \
        }                                                                            \
        while (bit) {                                                                \
            if (n >= d) {                                                            \
                n -= d;                                                              \
                q |= bit;                                                            \
            }                                                                        \
            d >>= 1;                                                                 \
            bit >>= 1;                                                               \
        }                                                                            \
        *rem = n;                                                                    \
        return q;                                                                    \
    }
RESTORING_DIVISION(udivmod32, uint32_t)
RESTORING_DIVISION(udivmod64_wide, uint64_t)

static uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem) {
    if ((n >> 32) == 0 && (d >> 32) == 0 && d) {          /* the 32-bit loop is much faster on RV32 */
        uint32_t r;
        uint64_t q = udivmod32((uint32_t)n, (uint32_t)d, &r);
        *rem = r;
        return q;
    }
    return udivmod64_wide(n, d, rem);
}

unsigned __udivsi3(unsigned n, unsigned d) { uint32_t r; return udivmod32(n, d, &r); }
unsigned __umodsi3(unsigned n, unsigned d) { uint32_t r; udivmod32(n, d, &r); return r; }

int __divsi3(int a, int b) {
    uint32_t r, q = udivmod32(a < 0 ? 0u - (uint32_t)a : (uint32_t)a, b < 0 ? 0u - (uint32_t)b : (uint32_t)b, &r);
    return ((a < 0) != (b < 0)) ? (int)(0u - q) : (int)q;
}

int __modsi3(int a, int b) {          /* the remainder takes the dividend's sign, as C requires */
    uint32_t r;
    udivmod32(a < 0 ? 0u - (uint32_t)a : (uint32_t)a, b < 0 ? 0u - (uint32_t)b : (uint32_t)b, &r);
    return a < 0 ? (int)(0u - r) : (int)r;
}

unsigned long long __udivdi3(unsigned long long n, unsigned long long d) { uint64_t r; return udivmod64(n, d, &r); }
unsigned long long __umoddi3(unsigned long long n, unsigned long long d) { uint64_t r; udivmod64(n, d, &r); return r; }

long long __divdi3(long long a, long long b) {
    uint64_t r, q = udivmod64(a < 0 ? 0u - (uint64_t)a : (uint64_t)a, b < 0 ? 0u - (uint64_t)b : (uint64_t)b, &r);
    return ((a < 0) != (b < 0)) ? (long long)(0u - q) : (long long)q;
}

long long __moddi3(long long a, long long b) {
    uint64_t r;
    udivmod64(a < 0 ? 0u - (uint64_t)a : (uint64_t)a, b < 0 ? 0u - (uint64_t)b : (uint64_t)b, &r);
    return a < 0 ? (long long)(0u - r) : (long long)r;
}

/* -- memory and strings ----------------------------------------------------------------------------------- */

void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d <= s || d >= s + n)
        return memcpy(dst, src, n);
    while (n--)
        d[n] = s[n];
    return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s) {
    const char *p = s;
    while (*p)
        p++;
    return (size_t)(p - s);
}

int strcmp(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

/* -- printf --------------------------------------------------------------------------------------------------- */

struct sink {
    char *buf;          /* NULL: the UART */
    size_t size, n;     /* n counts every character, also those past the buffer (snprintf's return value) */
};

static void emit(struct sink *s, char c) {
    if (!s->buf)
        uart_putc(c);
    else if (s->n + 1 < s->size)
        s->buf[s->n] = c;
    s->n++;
}

static void pad(struct sink *s, char c, int count) {
    while (count-- > 0)
        emit(s, c);
}

static int vsnprintf_sink(struct sink *s, const char *fmt, va_list ap) {
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            emit(s, *fmt);
            continue;
        }
        int left = 0, zero = 0, width = 0, lng = 0;
        for (;; fmt++) {
            if (fmt[1] == '-')
                left = 1;
            else if (fmt[1] == '0')
                zero = 1;
            else if (fmt[1] != '+' && fmt[1] != ' ' && fmt[1] != '#')
                break;
        }
        fmt++;
        if (*fmt == '*') {
            width = va_arg(ap, int);
            if (width < 0)
                left = 1, width = -width;
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'h' || *fmt == 'z') {
            if (*fmt == 'l')
                lng++;
            fmt++;
        }
        char digits[24];
        int len = 0, negative = 0;
        const char *text = digits;
        switch (*fmt) {
        case 'd':
        case 'i':
        case 'u':
        case 'x':
        case 'X':
        case 'o':
        case 'p': {
            unsigned base = (*fmt == 'x' || *fmt == 'X' || *fmt == 'p') ? 16 : *fmt == 'o' ? 8 : 10;
            uint64_t v;
            if (*fmt == 'p')
                v = (uint32_t)(uintptr_t)va_arg(ap, void *);
            else if (*fmt == 'd' || *fmt == 'i') {
                int64_t sv = lng >= 2 ? va_arg(ap, long long) : (int64_t)va_arg(ap, long);
                negative = sv < 0;
                v = negative ? 0u - (uint64_t)sv : (uint64_t)sv;
            } else
                v = lng >= 2 ? va_arg(ap, unsigned long long) : (uint64_t)va_arg(ap, unsigned long);
            const char *alphabet = *fmt == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            char reversed[24];
            int n = 0;
            do {
                uint64_t r;
                v = udivmod64(v, base, &r);
                reversed[n++] = alphabet[r];
            } while (v);
            if (*fmt == 'p') {
                digits[len++] = '0';
                digits[len++] = 'x';
            }
            while (n)
                digits[len++] = reversed[--n];
            break;
        }
        case 'c':
            digits[0] = (char)va_arg(ap, int);
            len = 1;
            break;
        case 's':
            text = va_arg(ap, const char *);
            if (!text)
                text = "(null)";
            len = (int)strlen(text);
            break;
        case '%':
            digits[0] = '%';
            len = 1;
            break;
        default:                         /* unknown conversion: print it as written */
            emit(s, '%');
            if (!*fmt)
                return (int)s->n;
            emit(s, *fmt);
            continue;
        }
        int fill = width - len - negative;
        if (!left && !zero)
            pad(s, ' ', fill);
        if (negative)
            emit(s, '-');
        if (!left && zero)
            pad(s, '0', fill);
        for (int i = 0; i < len; i++)
            emit(s, text[i]);
        if (left)
            pad(s, ' ', fill);
    }
    return (int)s->n;
}

int vprintf(const char *fmt, va_list ap) {
    struct sink s = {0, 0, 0};
    return vsnprintf_sink(&s, fmt, ap);
}

int printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    struct sink s = {buf, size, 0};
    int n = vsnprintf_sink(&s, fmt, ap);
    if (size)
        buf[s.n < size ? s.n : size - 1] = 0;
    return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int putchar(int c) {
    uart_putc((char)c);
    return (unsigned char)c;
}

int puts(const char *s) {
    uart_puts(s);
    uart_putc('\n');
    return 1;
}

/* -- multiply-free int8 products ---------------------------------------------------------------------------- */

uint16_t insitu_quarter_squares[257];

void mul8_init(void) {
    uint32_t square = 0;                       /* n², by (n+1)² = n² + 2n + 1 */
    for (uint32_t n = 0; n < 257; n++) {
        insitu_quarter_squares[n] = (uint16_t)(square >> 2);
        square += 2 * n + 1;
    }
}
