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

#endif
