# tvm-pipeline in a container: the same steps as `make setup` (Debian 12, Python 3.11).
#   docker build -t tvm-pipeline .
#   docker run --rm tvm-pipeline make demo
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc libc6-dev make cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/tvm-pipeline
COPY requirements.txt pyproject.toml ./
# torch 2.13.0 CPU build: the CPU wheel index keeps pip from pulling the multi-GB CUDA build.
RUN python -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --upgrade pip \
 && .venv/bin/pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
COPY . .
RUN .venv/bin/pip install --no-cache-dir --no-deps -e . && touch .venv/.installed
ENV PATH=/opt/tvm-pipeline/.venv/bin:$PATH
CMD ["make", "demo"]
