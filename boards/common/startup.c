/*
 * Start-up code shared by every board: the vector table, Reset_Handler and the fault handlers.
 *
 * Reset_Handler enables the FPU (first: the compiler may use FP registers anywhere), copies .data from flash, zeroes
 * .bss, paints the free stack with a pattern (so the harness can find the high-water mark), makes the bottom of the
 * stack a no-access MPU region where the board has an MPU (TVMP_BOARD_MPU=1), then runs main() and exits through
 * semihosting with its status. rdimon's crt0 does none of this correctly on M-profile, hence our own.
 *
 * Every exception other than reset and SysTick ends in fault_report(), which prints one line
 *     FAULT: <name> CFSR=0x........ PC=0x........ [details]
 * and exits with TVMP_FAULT_STATUS. The symbols __stack_* and __data_* / __bss_* come from common/sections.ld.
 */
#include <stdint.h>

#include "semihost.h"
#include "startup.h"

#define STACK_PAINT 0xDEADBEEFu

/* ARMv7-M has CFSR, the MPU and CPACR; ARMv6-M (Cortex-M0) has none of them. */
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
#define HAS_V7M_SYSTEM_REGISTERS 1
#else
#define HAS_V7M_SYSTEM_REGISTERS 0
#endif

#ifndef TVMP_BOARD_MPU
#define TVMP_BOARD_MPU 0
#endif
#define USE_MPU_GUARD (TVMP_BOARD_MPU && HAS_V7M_SYSTEM_REGISTERS)

#define REG32(address) (*(volatile uint32_t *)(address))
#define SCB_SHCSR REG32(0xE000ED24)
#define SCB_CFSR REG32(0xE000ED28)
#define SCB_HFSR REG32(0xE000ED2C)
#define SCB_MMFAR REG32(0xE000ED34)
#define SCB_BFAR REG32(0xE000ED38)
#define SCB_CPACR REG32(0xE000ED88)
#define MPU_TYPE REG32(0xE000ED90)
#define MPU_CTRL REG32(0xE000ED94)
#define MPU_RNR REG32(0xE000ED98)
#define MPU_RBAR REG32(0xE000ED9C)
#define MPU_RASR REG32(0xE000EDA0)

#define CFSR_MMARVALID (1u << 7)
#define CFSR_MSTKERR (1u << 4)
#define CFSR_BFARVALID (1u << 15)
#define CFSR_STKERR (1u << 12)

extern uint32_t __data_start[], __data_end[], __data_load[];
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __stack_bottom[], __stack_top[], __stack_guard_size[];

int main(void);
void Reset_Handler(void) __attribute__((noreturn));
void Fault_Handler(void);
void SysTick_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void fault_report(uint32_t stacked_pc, uint32_t stack_pointer) __attribute__((noreturn, used));

/* The linker symbol's address is its value. */
static uint32_t stack_guard_bytes(void) {
    return (uint32_t)(uintptr_t)__stack_guard_size;
}

/* Only the 16 system exceptions: the firmware enables no peripheral interrupt. */
__attribute__((section(".isr_vector"), used)) void (*const vector_table[16])(void) = {
    (void (*)(void))__stack_top, /* initial MSP */
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0,
    0,
    0,
    0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    SysTick_Handler,
};

static void enable_fpu(void) {
#if defined(__ARM_FP) && HAS_V7M_SYSTEM_REGISTERS
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11: full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
}

/* Fills the stack below the current SP with STACK_PAINT. The writes are volatile so the compiler cannot turn the
 * loop into a memset call, whose own frame would sit in the area being painted. */
__attribute__((noinline)) static void paint_stack(void) {
    uint32_t *stack_pointer;
    __asm__ volatile("mov %0, sp" : "=r"(stack_pointer));
    for (volatile uint32_t *word = __stack_bottom; word < stack_pointer; ++word) {
        *word = STACK_PAINT;
    }
}

/* Region 0, no access even when privileged, never executable, over the guard at the stack bottom. PRIVDEFENA keeps
 * the default memory map everywhere else. MemManage/BusFault/UsageFault are enabled so they are named in reports
 * instead of all escalating to HardFault. */
static void enable_stack_guard(void) {
#if HAS_V7M_SYSTEM_REGISTERS
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18);
#endif
#if USE_MPU_GUARD
    if (((MPU_TYPE >> 8) & 0xFFu) == 0) {
        return; /* no MPU regions on this core */
    }
    const uint32_t guard_bytes = stack_guard_bytes();
    const uint32_t size_field = (uint32_t)(31 - __builtin_clz(guard_bytes)) - 1; /* region size = 2^(SIZE+1) */
    MPU_RNR = 0;
    MPU_RBAR = (uint32_t)(uintptr_t)__stack_bottom;
    MPU_RASR = (1u << 28) | (0u << 24) | (size_field << 1) | 1u;
    MPU_CTRL = (1u << 2) | 1u;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
}

void Reset_Handler(void) {
    enable_fpu();
    for (uint32_t *source = __data_load, *target = __data_start; target < __data_end;) {
        *target++ = *source++;
    }
    for (uint32_t *target = __bss_start; target < __bss_end;) {
        *target++ = 0;
    }
    paint_stack();
    enable_stack_guard();
    semihost_exit(main());
}

uint32_t startup_stack_peak_bytes(void) {
    /* Start above the guard: with the MPU on, reading it would fault. */
    const uint32_t *word = __stack_bottom + stack_guard_bytes() / sizeof(uint32_t);
    while (word < __stack_top && *word == STACK_PAINT) {
        ++word;
    }
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)word);
}

int startup_stack_guard_intact(void) {
#if USE_MPU_GUARD
    return 1;
#else
    const uint32_t *guard_end = __stack_bottom + stack_guard_bytes() / sizeof(uint32_t);
    for (const uint32_t *word = __stack_bottom; word < guard_end; ++word) {
        if (*word != STACK_PAINT) {
            return 0;
        }
    }
    return 1;
#endif
}

/* --- fault reporting -------------------------------------------------------------------------------------------- */

/* Appends to a line buffer; the caller leaves room (the lines are short and fixed in shape). */
static char *append_text(char *cursor, const char *text) {
    while (*text != '\0') {
        *cursor++ = *text++;
    }
    *cursor = '\0';
    return cursor;
}

static char *append_hex32(char *cursor, uint32_t value) {
    static const char digits[] = "0123456789abcdef";
    cursor = append_text(cursor, "0x");
    for (int shift = 28; shift >= 0; shift -= 4) {
        *cursor++ = digits[(value >> shift) & 0xFu];
    }
    *cursor = '\0';
    return cursor;
}

static const char *exception_name(uint32_t number) {
    switch (number) {
    case 2: return "NMI";
    case 3: return "HardFault";
    case 4: return "MemManage";
    case 5: return "BusFault";
    case 6: return "UsageFault";
    case 11: return "SVCall";
    case 12: return "DebugMonitor";
    case 14: return "PendSV";
    case 15: return "SysTick";
    default: return "UnexpectedInterrupt";
    }
}

void startup_report_fault(const char *what) {
    char line[160];
    char *cursor = append_text(line, "FAULT: ");
    cursor = append_text(cursor, what);
    append_text(cursor, "\n");
    semihost_write0(line);
    semihost_exit(TVMP_FAULT_STATUS);
}

/*
 * Entered from every fault vector. The exception frame may sit in the guard (that is how a stack overflow ends), so:
 * turn the MPU off before touching it (semihosting reads of the guard would fail too), take the stacked PC, then move
 * SP back to the top of the stack so the C reporter has room. Nothing below runs on the overflowed stack.
 * fault_report(r0 = stacked PC or 0, r1 = SP the exception was taken with).
 */
__attribute__((naked)) void Fault_Handler(void) {
    __asm__ volatile(
        "mrs r1, msp\n"
#if HAS_V7M_SYSTEM_REGISTERS
        "ldr r2, =0xE000ED94\n" /* MPU_CTRL */
        "movs r3, #0\n"
        "str r3, [r2]\n"
        "dsb\n"
        "isb\n"
#endif
        /* A frame below the stack (an overflow that ran past the guard on a board without an MPU) may be unmapped:
         * reading it would fault again and lock the core up, so pass PC 0 instead. */
        "movs r0, #0\n"
        "ldr r2, =__stack_bottom\n"
        "cmp r1, r2\n"
        "bcc 1f\n"
        "ldr r0, [r1, #24]\n" /* stacked PC */
        "1:\n"
        "ldr r2, =__stack_top\n"
        "mov sp, r2\n"
        "ldr r3, =fault_report\n"
        "bx r3\n"
        ".ltorg\n");
}

void fault_report(uint32_t stacked_pc, uint32_t stack_pointer) {
    uint32_t exception_number;
    __asm__ volatile("mrs %0, ipsr" : "=r"(exception_number));
    const uint32_t guard_start = (uint32_t)(uintptr_t)__stack_bottom;
    const uint32_t guard_end = guard_start + stack_guard_bytes();
    char line[200];
    char *cursor = append_text(line, "FAULT: ");
    cursor = append_text(cursor, exception_name(exception_number & 0x1FFu));
#if HAS_V7M_SYSTEM_REGISTERS
    const uint32_t cfsr = SCB_CFSR;
    cursor = append_hex32(append_text(cursor, " CFSR="), cfsr);
    cursor = append_hex32(append_text(cursor, " HFSR="), SCB_HFSR);
    /* When stacking the frame itself faulted, the saved PC was never written. */
    const int stacking_failed = (cfsr & (CFSR_MSTKERR | CFSR_STKERR)) != 0;
    const int address_in_guard =
        (cfsr & CFSR_MMARVALID) && SCB_MMFAR >= guard_start && SCB_MMFAR < guard_end;
#else
    const int stacking_failed = 0;
    const int address_in_guard = 0;
#endif
    const int pc_known = !stacking_failed && stacked_pc != 0;
    cursor = pc_known ? append_hex32(append_text(cursor, " PC="), stacked_pc) : append_text(cursor, " PC=unknown");
    cursor = append_hex32(append_text(cursor, " SP="), stack_pointer);
#if HAS_V7M_SYSTEM_REGISTERS
    if (cfsr & CFSR_MMARVALID) {
        cursor = append_hex32(append_text(cursor, " MMFAR="), SCB_MMFAR);
    }
    if (cfsr & CFSR_BFARVALID) {
        cursor = append_hex32(append_text(cursor, " BFAR="), SCB_BFAR);
    }
#endif
    if (stacking_failed || address_in_guard || stack_pointer < guard_end) {
        cursor = append_text(cursor, " (stack overflow)");
    }
    append_text(cursor, "\n");
    semihost_write0(line);
    semihost_exit(TVMP_FAULT_STATUS);
}
