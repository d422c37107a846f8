"""The steady window of a throughput loop, sized by time: the first ``warmup_s`` seconds after a
loop's first event are not measured (group joins settle, caches fill, the broker's fetches reach
their pace), then ``window_s`` seconds are, whatever the loop's speed.

The standard library only: the peers' applications (each in a virtualenv of its own) use it too,
so every loop is timed the same way. A loop calls :meth:`SteadyWindow.tick` with how many events
it has finished so far — once when its first event arrives, then after each batch (or poll) —
and stops when it returns True.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Steady:
    events: int  # finished inside the window
    seconds: float  # the window's length, measured
    full: bool  # False: the loop ran out of events before the window's end (or inside the warm-up)


class SteadyWindow:
    def __init__(self, warmup_s: float, window_s: float, total: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.warmup_s, self.window_s, self.total, self.clock = warmup_s, window_s, total, clock
        self.first: tuple[float, int] | None = None  # (time, events done) at the first tick
        self.start: tuple[float, int] | None = None  # the window's opening tick
        self.end: tuple[float, int] | None = None  # its closing tick
        self.last: tuple[float, int] | None = None

    def tick(self, done: int) -> bool:
        """Record ``done`` events finished now; True once the window is over (or the events are)."""
        if self.end is not None:
            return True
        now = self.clock()
        self.last = (now, done)
        if self.first is None:
            self.first = (now, done)
        if self.start is None and now - self.first[0] >= self.warmup_s:
            self.start = (now, done)
        if self.start is not None and now - self.start[0] >= self.window_s:
            self.end = (now, done)
            return True
        return self.total is not None and done >= self.total

    @property
    def over(self) -> bool:
        return self.end is not None or (self.total is not None and self.last is not None
                                        and self.last[1] >= self.total)

    def steady(self) -> Steady:
        """The events and seconds of the window. A loop that ran out of events before its end is
        measured from the window's opening (or, ran out inside the warm-up, from its first event) to
        its last tick, and says so with ``full=False``."""
        if self.last is None:
            return Steady(0, 0.0, False)
        if self.end is not None:
            (t0, n0), (t1, n1) = self.start, self.end
            return Steady(n1 - n0, t1 - t0, True)
        t0, n0 = self.start if self.start is not None and self.last[0] > self.start[0] else self.first
        return Steady(self.last[1] - n0, self.last[0] - t0, False)
