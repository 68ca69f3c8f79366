"""Kernel tuning measured on the (emulated) board: search (`tuner`), records (`records`), compile-time rule (`rule`),
whole-model driver (`model`)."""
