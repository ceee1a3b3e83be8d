"""Seconds per stage of a whole-slide ``segment``, summed over tiles: where a run spends its time.

Light on purpose (two clock reads per stage and batch, never per cell), so it is always on:
``segment_slide`` logs the table at debug level and ``benchmarks/segment.py --cases profile``
prints it. Stages run in several threads (read-ahead, network, post-processing), so their sum
can exceed the wall time; that excess is the overlap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STAGES", "StageTimes"]


class StageTimes:
    """Seconds and calls per named stage, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            with self._lock:
                self._seconds[stage] = self._seconds.get(stage, 0.0) + dt
                self._calls[stage] = self._calls.get(stage, 0) + 1

    def reset(self) -> None:
        with self._lock:
            self._seconds.clear()
            self._calls.clear()

    def snapshot(self) -> dict[str, tuple[float, int]]:
        """{stage: (seconds, calls)} in the order stages first ran."""
        with self._lock:
            return {k: (v, self._calls[k]) for k, v in self._seconds.items()}

    def summary(self) -> str:
        return ", ".join(f"{k} {s:.2f} s" for k, (s, _) in self.snapshot().items())


STAGES = StageTimes()  # the process's segment stages (one slide at a time per process)
