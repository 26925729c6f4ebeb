/* The benchmark's port to the insitu SoC: its cycle counter. */
#include <stdint.h>
#define PORT_NAME "insitu"
uint64_t cycles(void);                 /* from the insitu runtime */
static inline uint64_t port_cycles(void) { return cycles(); }
