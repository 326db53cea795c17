#!/usr/bin/env bash
# Install vireid with its development extras into ./.venv (created if missing) and run the checks:
# ruff, the import-layer contracts, mypy (scripts/typecheck.sh) and the default pytest suite (CPU; not gpu,
# not slow).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
bash scripts/typecheck.sh
.venv/bin/python -m pytest "$@"
