# tvm-pipeline: two commands on a fresh machine.
#   make demo   set everything up, compile a model, run it on the emulated STM32F746, print its measured memory
#   make test   set everything up, run the test suite (what .ci/run calls)
# Set-up is idempotent: apt packages, a venv at .venv/ with pinned packages, the project installed editable.

VENV     := .venv
PY       := $(VENV)/bin/python
APT_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc make cmake
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP    := $(VENV)/.installed

.PHONY: setup toolchain demo test test-all bench clean

setup: toolchain $(STAMP)

toolchain:
	@if ! command -v arm-none-eabi-gcc >/dev/null || ! command -v qemu-system-arm >/dev/null || ! command -v cmake >/dev/null \
	   || [ ! -e /usr/lib/arm-none-eabi/newlib ]; then \
	  echo "installing the Cortex-M toolchain and QEMU: $(APT_PKGS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PKGS); \
	fi

$(STAMP): requirements.txt pyproject.toml
	@command -v python3.11 >/dev/null || command -v python3 >/dev/null
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: setup
	$(PY) -m tvm_pipeline.demo

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build demo_out .pytest_cache
