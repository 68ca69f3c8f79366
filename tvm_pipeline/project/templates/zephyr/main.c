/*
 * Zephyr glue, the only Zephyr-specific source: times one inference (tvmp_sample.c) with the kernel's cycle
 * counter, reads the main thread's stack high-water mark, and prints the report with printk. The report repeats
 * every TVMP_REPEAT_MS so that a serial reader that opens the port late (`tvmp run --serial`) still sees a whole one.
 */
#include <zephyr/kernel.h>
#include <zephyr/sys/printk.h>

#include "tvmp_sample.h"

#ifndef TVMP_REPEAT_MS
#define TVMP_REPEAT_MS 5000
#endif

static void write_text(const char *text)
{
	printk("%s", text);
}

int main(void)
{
	for (;;) {
		const uint32_t start = k_cycle_get_32();
		const int status = tvmp_sample_run();
		/* Unsigned arithmetic absorbs one wrap of the 32-bit counter (about 20 s at 216 MHz). */
		const uint32_t cycles = k_cycle_get_32() - start;

		tvmp_sample_measurement_t measured = {
			.cycles = cycles,
			.micros = (int64_t)k_cyc_to_us_floor64(cycles),
			.stack_peak_bytes = -1,
		};
		size_t unused = 0;
		if (k_thread_stack_space_get(k_current_get(), &unused) == 0) {
			measured.stack_peak_bytes = (int64_t)(k_current_get()->stack_info.size - unused);
		}
		tvmp_sample_report(status, &measured, write_text);
		if (TVMP_REPEAT_MS <= 0) {
			return status;
		}
		k_msleep(TVMP_REPEAT_MS);
	}
}
