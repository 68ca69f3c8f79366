/*
 * ARM semihosting: the firmware's only channel to the host (QEMU with -semihosting-config enable=on). Text goes to
 * QEMU's stdout through the `shc` chardev; the exit status becomes QEMU's own exit code.
 */
#ifndef TVMP_SEMIHOST_H
#define TVMP_SEMIHOST_H

/* Writes a NUL-terminated string (SYS_WRITE0). */
void semihost_write0(const char *text);

/* Ends the emulation with `status` as QEMU's exit code (SYS_EXIT_EXTENDED, ApplicationExit). */
void semihost_exit(int status) __attribute__((noreturn));

#endif
