#include <cxxrtl/capi/cxxrtl_capi.h>
#include <cxxrtl/capi/cxxrtl_capi_vcd.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

extern "C" cxxrtl_toplevel cxxrtl_design_create();

struct insitu_sim {
    cxxrtl_handle handle;
    cxxrtl_object *clk, *rst, *exit_stb, *exit_code, *sent_stb, *sent_data, *rx, *ram;
    uint64_t cycles;
    /* bytes for the SoC's receive line, sent as 8N1 frames at clocks_per_bit */
    uint8_t *rx_queue;
    size_t rx_head, rx_tail, rx_cap;
    uint32_t clocks_per_bit, rx_bit, rx_clock;     /* rx_bit: 0 idle, 1 start, 2..9 data, 10 stop */
    cxxrtl_vcd vcd;
    FILE *vcd_file;
    uint64_t vcd_left;
};

static void vcd_sample(insitu_sim *s, uint64_t time) {
    const char *data;
    size_t size;
    cxxrtl_vcd_sample(s->vcd, time);
    for (;;) {
        cxxrtl_vcd_read(s->vcd, &data, &size);
        if (!size)
            break;
        fwrite(data, 1, size, s->vcd_file);
    }
}

/* Trace every signal except memories to path for the next `cycles` clocks (0: close the trace). */
extern "C" int insitu_vcd(void *p, const char *path, uint64_t cycles) {
    insitu_sim *s = (insitu_sim *)p;
    if (s->vcd) {
        fclose(s->vcd_file);
        cxxrtl_vcd_destroy(s->vcd);
        s->vcd = 0;
    }
    if (!cycles)
        return 1;
    s->vcd_file = fopen(path, "w");
    if (!s->vcd_file)
        return 0;
    s->vcd = cxxrtl_vcd_create();
    cxxrtl_vcd_timescale(s->vcd, 1, "ns");
    cxxrtl_vcd_add_from_without_memories(s->vcd, s->handle);
    s->vcd_left = cycles;
    return 1;
}

static cxxrtl_object *must(cxxrtl_handle h, const char *name) {
    return cxxrtl_get(h, name);
}

/* ram_name: the memory the image is loaded into (the RAM, or the ROM of the ROM + SPRAM layout). */
extern "C" void *insitu_create(const char *ram_name, uint32_t clocks_per_bit) {
    insitu_sim *s = (insitu_sim *)calloc(1, sizeof(insitu_sim));
    s->handle = cxxrtl_create(cxxrtl_design_create());
    s->clk = must(s->handle, "clk");
    s->rst = must(s->handle, "rst");
    s->exit_stb = must(s->handle, "exit_stb");
    s->exit_code = must(s->handle, "exit_code");
    s->sent_stb = must(s->handle, "uart_sent_stb");
    s->sent_data = must(s->handle, "uart_sent_data");
    s->rx = must(s->handle, "uart_rx");
    s->ram = must(s->handle, ram_name);
    s->clocks_per_bit = clocks_per_bit ? clocks_per_bit : 1;
    if (!s->clk || !s->rst || !s->exit_stb || !s->exit_code || !s->sent_stb || !s->sent_data || !s->rx || !s->ram) {
        cxxrtl_destroy(s->handle);
        free(s);
        return 0;
    }
    s->rx->next[0] = 1;                /* the line idles high */
    return s;
}

/* Queue bytes for the SoC's receive line. Returns 0 when out of memory. */
extern "C" int insitu_uart_send(void *p, const uint8_t *data, size_t n) {
    insitu_sim *s = (insitu_sim *)p;
    if (s->rx_head == s->rx_tail)
        s->rx_head = s->rx_tail = 0;
    if (s->rx_tail + n > s->rx_cap) {
        size_t cap = (s->rx_tail + n) * 2 + 64;
        uint8_t *q = (uint8_t *)realloc(s->rx_queue, cap);
        if (!q)
            return 0;
        s->rx_queue = q;
        s->rx_cap = cap;
    }
    memcpy(s->rx_queue + s->rx_tail, data, n);
    s->rx_tail += n;
    return 1;
}

/* Bytes queued for the receive line and not yet fully sent (the one on the line included). */
extern "C" size_t insitu_uart_pending(void *p) {
    insitu_sim *s = (insitu_sim *)p;
    return s->rx_tail - s->rx_head;
}

/* The receive line's level for the coming clock: start bit, 8 data bits LSB first, stop bit. */
static int rx_line(insitu_sim *s) {
    if (s->rx_bit == 0) {
        if (s->rx_head == s->rx_tail)
            return 1;
        s->rx_bit = 1;
        s->rx_clock = 0;
    }
    int level = s->rx_bit == 1 ? 0 : s->rx_bit == 10 ? 1 : (s->rx_queue[s->rx_head] >> (s->rx_bit - 2)) & 1;
    if (++s->rx_clock == s->clocks_per_bit) {
        s->rx_clock = 0;
        if (++s->rx_bit == 11) {
            s->rx_bit = 0;
            s->rx_head++;
        }
    }
    return level;
}

extern "C" uint32_t *insitu_ram(void *p, size_t *depth) {
    insitu_sim *s = (insitu_sim *)p;
    *depth = s->ram->depth;
    return s->ram->curr;
}

extern "C" void insitu_destroy(void *p) {
    insitu_sim *s = (insitu_sim *)p;
    insitu_vcd(p, 0, 0);
    cxxrtl_destroy(s->handle);
    free(s->rx_queue);
    free(s);
}

/* Run up to max_cycles clocks. Returns 1 when the firmware exited (code in *code), 2 right after the
 * UART sent the byte stop_byte (0..255; -1: never stop on a byte), 0 at the limit.
 * The design is posedge-only: the rising edge is evaluated, the falling edge only committed (no comb
 * logic depends on the clock level), so each clock costs one eval. */
extern "C" int insitu_run(void *p, uint64_t max_cycles, uint8_t *uart, size_t uart_cap, size_t *uart_len,
                          uint32_t *code, uint64_t *cycles, int stop_byte) {
    insitu_sim *s = (insitu_sim *)p;
    for (uint64_t n = 0; n < max_cycles; n++) {
        s->rx->next[0] = rx_line(s);
        s->clk->next[0] = 1;
        cxxrtl_step(s->handle);
        s->cycles++;
        int exited = s->exit_stb->curr[0] & 1, stop = 0;
        if (s->sent_stb->curr[0] & 1) {
            uint8_t byte = (uint8_t)s->sent_data->curr[0];
            if (*uart_len < uart_cap)
                uart[*uart_len] = byte;
            (*uart_len)++;
            stop = (int)byte == stop_byte;
        }
        if (s->vcd)
            vcd_sample(s, 2 * s->cycles - 1);
        s->clk->next[0] = 0;
        cxxrtl_commit(s->handle);
        if (s->vcd) {
            vcd_sample(s, 2 * s->cycles);
            if (!--s->vcd_left)
                insitu_vcd(s, 0, 0);       /* the trace is complete: close the file */
            else if (exited)
                fflush(s->vcd_file);
        }
        if (exited) {
            *code = s->exit_code->curr[0];
            *cycles = s->cycles;
            return 1;
        }
        if (stop) {
            *cycles = s->cycles;
            return 2;
        }
    }
    *cycles = s->cycles;
    if (s->vcd)
        fflush(s->vcd_file);
    return 0;
}
