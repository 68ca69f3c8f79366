/* Test stub of Zephyr's <zephyr/sys/printk.h>: printk with its documented signature and format checking. */
#ifndef ZEPHYR_STUB_PRINTK_H
#define ZEPHYR_STUB_PRINTK_H

void printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
