/*
 * Test harness: runs model_run() once on the input in input_data.h and prints what it measured, one fact a line:
 *
 *     TVMP-OUTPUT count=<elements> element_bytes=<sizeof(model_output_t)>
 *     TVMP-OUT <first index> <element hex> <element hex> ...     (up to 8 elements a line)
 *     TVMP-TICKS <SysTick ticks spent in model_run>              ("unknown" on the host)
 *     TVMP-STACK <peak stack bytes since reset>                  ("unknown" on the host)
 *     TVMP-DONE status=<model_run's return value>
 *
 * Each element is printed as its bytes in memory order, two hex digits each, so the host gets it back bit-exact
 * whatever model_output_t is. The program's exit status is model_run's. Built for a board (semihosting, SysTick,
 * startup.c's stack paint) or, with -DTVMP_HOST, as an ordinary host program that prints the same lines.
 * Nothing is allocated at run time: the output buffer is static.
 */
#include <stdint.h>

#include "model.h"
#include "input_data.h"

#ifdef TVMP_HOST
#include <stdio.h>
#else
#include "semihost.h"
#include "startup.h"
#endif

#define ELEMENTS_PER_LINE 8

static model_output_t output[MODEL_OUTPUT_COUNT];

static void write_line(const char *line) {
#ifdef TVMP_HOST
    fputs(line, stdout);
#else
    semihost_write0(line);
#endif
}

static char *append_text(char *cursor, const char *text) {
    while (*text != '\0') {
        *cursor++ = *text++;
    }
    *cursor = '\0';
    return cursor;
}

static char *append_decimal(char *cursor, uint64_t value) {
    char digits[20];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0);
    while (count > 0) {
        *cursor++ = digits[--count];
    }
    *cursor = '\0';
    return cursor;
}

static char *append_bytes_hex(char *cursor, const uint8_t *bytes, uint32_t count) {
    static const char digits[] = "0123456789abcdef";
    for (uint32_t index = 0; index < count; ++index) {
        *cursor++ = digits[bytes[index] >> 4];
        *cursor++ = digits[bytes[index] & 0xFu];
    }
    *cursor = '\0';
    return cursor;
}

static void print_output(void) {
    /* Worst case a line: prefix + index + ELEMENTS_PER_LINE * (space + 2 hex digits per byte) + newline. */
    char line[40 + ELEMENTS_PER_LINE * (1 + 2 * sizeof(model_output_t))];
    char *cursor = append_text(line, "TVMP-OUTPUT count=");
    cursor = append_decimal(cursor, MODEL_OUTPUT_COUNT);
    cursor = append_text(cursor, " element_bytes=");
    cursor = append_decimal(cursor, sizeof(model_output_t));
    append_text(cursor, "\n");
    write_line(line);
    const uint8_t *bytes = (const uint8_t *)output;
    for (uint32_t first = 0; first < MODEL_OUTPUT_COUNT; first += ELEMENTS_PER_LINE) {
        cursor = append_decimal(append_text(line, "TVMP-OUT "), first);
        for (uint32_t index = first; index < first + ELEMENTS_PER_LINE && index < MODEL_OUTPUT_COUNT; ++index) {
            cursor = append_text(cursor, " ");
            cursor = append_bytes_hex(cursor, bytes + index * sizeof(model_output_t), sizeof(model_output_t));
        }
        append_text(cursor, "\n");
        write_line(line);
    }
}

static void print_figure(const char *prefix, int known, uint64_t value) {
    char line[48];
    char *cursor = append_text(line, prefix);
    cursor = known ? append_decimal(cursor, value) : append_text(cursor, "unknown");
    append_text(cursor, "\n");
    write_line(line);
}

#ifndef TVMP_HOST
/*
 * SysTick as a 64-bit tick counter: the 24-bit down-counter runs from the core clock (CLKSOURCE=1) and every wrap
 * adds 2^24 in the interrupt. Under QEMU -icount shift=0 the clock is tied to the instruction count, which is what
 * makes the figure deterministic (see instructions_per_tick in the board JSON files).
 */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04)
#define SYST_RELOAD 0x00FFFFFFu
#define ICSR_PENDSTSET (1u << 26)

static volatile uint32_t systick_wraps;

void SysTick_Handler(void) {
    systick_wraps = systick_wraps + 1;
}

static void systick_start(void) {
    SYST_RVR = SYST_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* ENABLE | TICKINT | CLKSOURCE=core clock */
    /* The counter reads 0 until its first reload; reading before that would look like a wrap. */
    while (SYST_CVR == 0) {
    }
}

static uint64_t systick_now(void) {
    uint32_t wraps;
    uint32_t value;
    uint32_t pending;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
        pending = SCB_ICSR & ICSR_PENDSTSET;
    } while (wraps != systick_wraps);
    /* A wrap whose interrupt has not run yet: the counter has already reloaded to near the top. */
    if (pending && value > SYST_RELOAD / 2) {
        ++wraps;
    }
    return (uint64_t)wraps * (SYST_RELOAD + 1u) + (SYST_RELOAD - value);
}
#endif

int main(void) {
#ifdef TVMP_HOST
    const int status = model_run(input_data, output);
    const int ticks_known = 0;
    const uint64_t ticks = 0;
#else
    systick_start();
    const uint64_t start = systick_now();
    const int status = model_run(input_data, output);
    const uint64_t ticks = systick_now() - start;
    const int ticks_known = 1;
#endif
    print_output();
    print_figure("TVMP-TICKS ", ticks_known, ticks);
#ifdef TVMP_HOST
    print_figure("TVMP-STACK ", 0, 0);
#else
    print_figure("TVMP-STACK ", 1, startup_stack_peak_bytes());
    if (!startup_stack_guard_intact()) {
        startup_report_fault("StackOverflow the stack guard was overwritten (this board has no MPU to catch it)");
    }
#endif
    char line[40];
    char *cursor = append_text(line, status < 0 ? "TVMP-DONE status=-" : "TVMP-DONE status=");
    cursor = append_decimal(cursor, status < 0 ? (uint64_t)(-(int64_t)status) : (uint64_t)status);
    append_text(cursor, "\n");
    write_line(line);
    return status;
}
