/* Smoke test: identify the SoC, time a loop, print over the UART. */
#include "runtime.h"

int main(void) {
    if (SYS_ID != SYSTEM_ID)
        return 2;
    uint64_t t0 = cycles();
    volatile uint32_t sum = 0;
    for (uint32_t i = 1; i <= 10; i++)
        sum += i;
    uint32_t dt = (uint32_t)(cycles() - t0);
    uart_puts("hello from insitu: sum=");
    uart_putdec(sum);
    uart_puts(" cycles=");
    uart_putdec(dt);
    uart_putc('\n');
    return 0;
}
