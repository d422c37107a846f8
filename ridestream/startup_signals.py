"""SIGTERM or Ctrl-C while the command line is still importing (a second or two of scikit-learn,
pandas, …) is remembered instead of killing the process on the spot: a service stopped during
start-up then exits cleanly (0) — nothing was consumed or produced — rather than dying by the
signal. :func:`install` runs first thing in ``ridestream.cli``; :func:`settle` once the imports
are done, before a command runs and installs its own handlers.

:func:`install` also makes SIGUSR1 write every thread's stack to stderr (the process's log under
``ridestream run``) and go on: what a process that does not stop, or stalls, is doing —
``ridestream run`` sends it before it kills a child that overran its drain."""

from __future__ import annotations

import faulthandler
import signal
import sys
from types import FrameType

_received: list[int] = []


def _remember(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)


def install() -> None:
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, OSError):  # no SIGUSR1 here, or a stderr without a file (captured)
        pass
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _remember)


def settle() -> None:
    """The usual handlers again; if a stop was asked for meanwhile, exit now, cleanly."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _received:
        print(f"ridestream: stopped by {signal.Signals(_received[0]).name} while starting", file=sys.stderr)
        sys.exit(0)
