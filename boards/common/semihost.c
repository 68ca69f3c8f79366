/* ARM semihosting calls used by the harness and the fault handler (see semihost.h). */
#include <stdint.h>

#include "semihost.h"

enum {
    SYS_WRITE0 = 0x04,
    SYS_EXIT_EXTENDED = 0x20,
    /* ADP_Stopped_ApplicationExit: with SYS_EXIT_EXTENDED the second word is the exit status. Plain SYS_EXIT (0x18)
     * on 32-bit ARM cannot carry a status, so QEMU would always exit 0. */
    ADP_STOPPED_APPLICATION_EXIT = 0x20026,
};

/* BKPT 0xAB is the M-profile semihosting trap: r0 = operation, r1 = argument, result in r0. */
static int semihost_call(int operation, const void *argument) {
    register int r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void semihost_write0(const char *text) {
    semihost_call(SYS_WRITE0, text);
}

void semihost_exit(int status) {
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    semihost_call(SYS_EXIT_EXTENDED, block);
    /* Only reached without a semihosting host; stay here rather than run off into whatever follows. */
    for (;;) {
    }
}
