/* Test stub: the declarations of Zephyr's <zephyr/kernel.h> that the generated glue uses, with the signatures of
 * Zephyr's API documentation (kernel threads, timing). Enough to compile the glue, nothing to run it. */
#ifndef ZEPHYR_STUB_KERNEL_H
#define ZEPHYR_STUB_KERNEL_H

#include <stddef.h>
#include <stdint.h>

struct _thread_stack_info {
	uintptr_t start;
	size_t size;
	size_t delta;
};

struct k_thread {
	struct _thread_stack_info stack_info;
};

typedef struct k_thread *k_tid_t;

uint32_t k_cycle_get_32(void);
uint64_t k_cyc_to_us_floor64(uint64_t t);
k_tid_t k_current_get(void);
int k_thread_stack_space_get(const struct k_thread *thread, size_t *unused_ptr);
int32_t k_msleep(int32_t ms);

#endif
