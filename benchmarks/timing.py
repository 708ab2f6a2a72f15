"""The timing helper the benchmark scripts share (each script is run as ``python benchmarks/X.py``,
which puts this folder on the import path)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` runs (the least disturbed one)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
