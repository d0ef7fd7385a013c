"""Wall-clock timing of named parts, for benchmarks and run-time reports.

timings = {}
with timed(timings, "world model"):
    ...
timings                                  # {"world model": 0.051}: seconds, summed over repeated parts
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def timed(timings: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the seconds the block takes to timings[name]; with timings None, measure nothing."""
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


Progress = Callable[[str, int, int, str], None]  # on_progress(phase, done, total, status) of long steps
