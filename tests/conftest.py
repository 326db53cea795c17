"""Suite-wide test configuration: keep CPU tests small and deterministic."""

from __future__ import annotations

import os

# Two cores on CI: keep BLAS / torch from oversubscribing when several tests run.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
