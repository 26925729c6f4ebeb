/* A portable, self-checking integer benchmark in plain C99 (hosted headers, no platform code): CRC-32,
 * sorting, matrix products, division and formatting. Every kernel checks its own result; main returns
 * the number of failures. The platform supplies port.h: port_cycles() and PORT_NAME. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "port.h"

static int failures;

static void check(int ok, const char *what) {
    if (!ok) {
        printf("FAIL %s\n", what);
        failures++;
    }
}

static uint32_t lcg_state = 12345u;
static uint32_t lcg(void) {
    lcg_state = lcg_state * 1103515245u + 12345u;
    return lcg_state >> 8;
}

static uint32_t crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void bench_crc(void) {
    check(crc32((const uint8_t *)"123456789", 9) == 0xcbf43926u, "crc32 check value");
    static uint8_t buf[512];
    for (int i = 0; i < 512; i++)
        buf[i] = (uint8_t)(i % 251);
    printf("crc32(512) %08lx\n", (unsigned long)crc32(buf, sizeof buf));
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void shell_sort(int *v, int n) {
    for (int gap = n / 2; gap > 0; gap /= 2)
        for (int i = gap; i < n; i++)
            for (int j = i; j >= gap && cmp_int(&v[j - gap], &v[j]) > 0; j -= gap) {
                int t = v[j];
                v[j] = v[j - gap];
                v[j - gap] = t;
            }
}

static void bench_sort(void) {
    enum { N = 200 };
    static int v[N];
    long sum = 0;
    for (int i = 0; i < N; i++) {
        v[i] = (int)(lcg() % 20001) - 10000;
        sum += v[i];
    }
    shell_sort(v, N);
    long after = 0;
    int ordered = 1;
    for (int i = 0; i < N; i++) {
        after += v[i];
        if (i && v[i - 1] > v[i])
            ordered = 0;
    }
    check(ordered && after == sum, "sort");
    printf("sort min %d max %d median %d\n", v[0], v[N - 1], (v[N / 2 - 1] + v[N / 2]) / 2);
}

static void bench_matrix(void) {
    enum { N = 12 };
    static int32_t a[N][N], b[N][N], c[N][N], bt[N][N];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            a[i][j] = (int32_t)(lcg() % 201) - 100;
            b[i][j] = (int32_t)(lcg() % 201) - 100;
            bt[j][i] = b[i][j];
        }
    int64_t trace = 0;
    int same = 1;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            int32_t s = 0, t = 0;
            for (int k = 0; k < N; k++) {
                s += a[i][k] * b[k][j];
                t += a[i][k] * bt[j][k];
            }
            c[i][j] = s;
            same &= s == t;
            if (i == j)
                trace += s;
        }
    check(same, "matrix product, two orders");
    printf("matrix trace %lld c[3][7] %ld\n", (long long)trace, (long)c[3][7]);
}

static void bench_division(void) {
    int ok = 1;
    for (int i = 0; i < 300; i++) {
        int32_t n = (int32_t)(lcg() ^ (lcg() << 16)), d = (int32_t)(lcg() % 2000) - 1000;
        if (d == 0)
            d = 7;
        int32_t q = n / d, r = n % d;
        ok &= (int64_t)q * d + r == n && abs(r) < abs(d) && (r == 0 || (r < 0) == (n < 0));
        uint32_t un = (uint32_t)n, ud = (uint32_t)(d < 0 ? -d : d);
        ok &= (un / ud) * ud + un % ud == un && un % ud < ud;
        uint64_t wide = ((uint64_t)un << 20) | (uint64_t)i, wq = wide / ud;
        ok &= wq * ud + wide % ud == wide;
    }
    check(ok, "division and modulo");
    /* decimal by division, against printf */
    char mine[16], theirs[16];
    uint32_t v = 4000000000u;
    int at = 15;
    mine[at] = 0;
    do {
        mine[--at] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    snprintf(theirs, sizeof theirs, "%lu", 4000000000ul);
    check(strcmp(mine + at, theirs) == 0, "decimal conversion");
    int a = 1071, b = 462;
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    check(a == 21, "gcd");
    printf("gcd(1071, 462) %d\n", a);
}

int main(void) {
    uint64_t t0 = port_cycles();
    bench_crc();
    bench_sort();
    bench_matrix();
    bench_division();
    uint64_t t1 = port_cycles();
    printf("%s: %d failure(s), %lu cycles\n", PORT_NAME, failures, (unsigned long)(t1 - t0));
    return failures;
}
