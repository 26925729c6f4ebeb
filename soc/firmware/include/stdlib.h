/* The part of <stdlib.h> the insitu runtime implements: exit() ends the program (the simulation reports
 * the code), abort() exits with 134. */
#ifndef INSITU_STDLIB_H
#define INSITU_STDLIB_H
#include <stddef.h>
#define EXIT_SUCCESS 0
#define EXIT_FAILURE 1
void exit(int code) __attribute__((noreturn));
void abort(void) __attribute__((noreturn));
static inline int abs(int v) { return v < 0 ? -v : v; }
#endif
