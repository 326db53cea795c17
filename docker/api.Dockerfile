# syntax=docker/dockerfile:1.7
# Serving image: ONNX Runtime + FAISS + FastAPI, no torch.
# Build from the repository root:  docker build -f docker/api.Dockerfile -t vireid-api .
# GPU hosts: --build-arg ORT_EXTRA=gpu installs the gpu extra (onnxruntime-gpu instead of onnxruntime).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
COPY --from=ghcr.io/astral-sh/uv:0.5 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
ARG ORT_EXTRA=serve
# --build-arg INDEX_EXTRA=milvus adds pymilvus for VIREID_INDEX_BACKEND=milvus (docker/compose.yaml profile milvus).
ARG INDEX_EXTRA=
WORKDIR /app
RUN uv venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# Dependencies first (cached layer), then the project.
COPY pyproject.toml README.md LICENSE ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install -r pyproject.toml --extra "$ORT_EXTRA" --extra postgres ${INDEX_EXTRA:+--extra "$INDEX_EXTRA"}
COPY vireid ./vireid
COPY training ./training
COPY serving ./serving
COPY index ./index
COPY api ./api
RUN --mount=type=cache,target=/root/.cache/uv uv pip install --no-deps --reinstall .

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --create-home --uid 10001 vireid
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIREID_DATA_DIR=/data \
    VIREID_MODEL_DIR=/models
USER vireid
VOLUME ["/data", "/models"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status==200 else 1)"
CMD ["vireid", "serve", "--host", "0.0.0.0", "--port", "8000"]
