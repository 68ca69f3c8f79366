"""Kernel tuning measured on the (emulated) board: one kernel's search (`tuner`, measured by `measure`), records
(`records`), the whole-model driver (`model`), the per-model stack allowance checked on the board (`allowance`),
applying records at compile time (`rule`, `apply`), and settings sweeps (`sweep`)."""
