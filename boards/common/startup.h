/*
 * What startup.c tells the rest of the firmware about the stack it set up (the harness reports these).
 */
#ifndef TVMP_STARTUP_H
#define TVMP_STARTUP_H

#include <stdint.h>

/* Exit status of a firmware that faulted (or overran its stack on a board without an MPU). */
#define TVMP_FAULT_STATUS 250

/* Bytes of stack ever used since reset: the stack top minus the lowest word that no longer holds the paint. */
uint32_t startup_stack_peak_bytes(void);

/* 1 while the stack guard is untouched. Boards with an MPU always answer 1: a write to the guard faults instead. */
int startup_stack_guard_intact(void);

/* Prints `FAULT: <what> ...` through semihosting and exits with TVMP_FAULT_STATUS. */
void startup_report_fault(const char *what) __attribute__((noreturn));

#endif
