"""Where a step process's time goes, by phase: the figures a gate puts in its result (GateResult.phases).

`with phase("read"): ...` adds the block's seconds to its phase; a phase inside another is taken out of
the outer one, so the phases never count a second twice. `seconds()` gives every phase so far, plus
`start` (the interpreter's start until keiko's first module ran, from the process's start time) and
`own work` (everything since then that no phase claimed: for a gate, its own pandas work). What only the
parent sees, the process's exit after its result line, is bench/pipeline.py's to measure.

Imported first by keiko.cli, so the clock starts before keiko's own imports. Standard library only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

START, OWN_WORK = "start", "own work"

_started = time.perf_counter()
_seconds: dict[str, float] = {}
_open: list[str] = []


def _process_age() -> float:
    """Seconds since this process was created (Linux /proc: starttime, in clock ticks since boot)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux: no start figure
        return 0.0


_start_seconds = _process_age()


@contextmanager
def phase(name: str) -> Iterator[None]:
    began = time.perf_counter()
    _open.append(name)
    try:
        yield
    finally:
        _open.pop()
        spent = time.perf_counter() - began
        _seconds[name] = _seconds.get(name, 0.0) + spent
        if _open:  # the enclosing phase did not spend these
            _seconds[_open[-1]] = _seconds.get(_open[-1], 0.0) - spent


def claim(name: str) -> None:
    """Give `name` every second since the start that no phase has claimed yet (for module-level imports)."""
    _seconds[name] = _seconds.get(name, 0.0) + time.perf_counter() - _started - sum(_seconds.values())


def seconds() -> dict[str, float]:
    """Seconds by phase until now, rounded to the millisecond: start, each phase entered, own work."""
    claimed = sum(_seconds.values())
    figures = {START: _start_seconds, **_seconds, OWN_WORK: time.perf_counter() - _started - claimed}
    return {name: round(value, 3) for name, value in figures.items()}
