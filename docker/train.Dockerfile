# syntax=docker/dockerfile:1.7
# Training / export image: CPU torch by default.
# Build from the repository root:  docker build -f docker/train.Dockerfile -t vireid-train .
# For CUDA training, build FROM an nvidia/cuda runtime base and set TORCH_INDEX to the matching
# PyTorch CUDA wheel index (the default pins the CPU wheel).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
COPY --from=ghcr.io/astral-sh/uv:0.5 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
RUN uv venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md LICENSE ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --extra-index-url "$TORCH_INDEX" --index-strategy unsafe-best-match -r pyproject.toml --extra train --extra serve
COPY vireid ./vireid
COPY training ./training
COPY serving ./serving
COPY index ./index
COPY api ./api
COPY configs ./configs
RUN --mount=type=cache,target=/root/.cache/uv uv pip install --no-deps --reinstall .

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --create-home --uid 10001 vireid
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app/configs /opt/vireid/configs
ENV PATH=/opt/venv/bin:$PATH
USER vireid
WORKDIR /work
VOLUME ["/data", "/runs", "/weights"]
ENTRYPOINT ["vireid"]
CMD ["train", "--help"]
