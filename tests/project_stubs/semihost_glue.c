/* Test glue: runs a generated project's portable sample (tvmp_sample.c) on the emulated board, printing its report
 * through semihosting, the way Zephyr's main.c prints it with printk. Not generated: it stands in for a real board. */
#include "semihost.h"
#include "startup.h"
#include "tvmp_sample.h"

static void write_text(const char *text) {
    semihost_write0(text);
}

int main(void) {
    const int status = tvmp_sample_run();
    const tvmp_sample_measurement_t measured = {-1, -1, (int64_t)startup_stack_peak_bytes()};
    tvmp_sample_report(status, &measured, write_text);
    return status;
}
