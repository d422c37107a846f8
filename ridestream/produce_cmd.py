"""``ridestream produce``: the backend, publishing rides live."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ridestream.console import err

if TYPE_CHECKING:  # annotations only: the command line imports these when a command runs
    from shared.kafka.settings import Settings

# the names of shared.data.simulator.DRIFTS, for --help without importing the simulator (pandas);
# tests/unit/test_cli_imports.py holds the two to agreeing
DRIFT_NAMES = ("airport-surge", "long-trips", "night", "cash")


def produce(
    rate: str = typer.Option("500/s", help="events a second, e.g. 500 or 500/s (0 = as fast as the broker takes them)"),
    rides: int = typer.Option(None, help="how many rides (default: until stopped)"),
    from_tlc: Path = typer.Option(None, "--from-tlc", help="replay a TLC trip file (CSV or Parquet) instead"),
    speedup: float = typer.Option(60.0, help="with --from-tlc: replay at event time ÷ speedup (0 = use --rate)"),
    seed: int = typer.Option(0, help="simulator seed"),
    quiet: bool = typer.Option(False, "--quiet", help="no live progress line"),
    drift: str = typer.Option(None, "--drift", help="shift the simulated traffic mix: "
                              + ", ".join(DRIFT_NAMES) + " (docs/monitoring.md)"),
) -> None:
    """Publish ride lifecycles to rides.events, each request stamped with the initial estimate."""
    from producer.backend import Backend, PublishStats
    from producer.sources import simulated, tlc_replay
    from shared.data import simulator
    from shared.kafka.clients import make_admin, require_topics
    from shared.kafka.settings import load_settings
    from shared.ml.artifacts import load_served

    if drift is not None and drift not in simulator.DRIFTS:
        raise typer.BadParameter(f"{drift!r}: choose from {', '.join(simulator.DRIFTS)}", param_hint="--drift")
    if drift is not None and from_tlc is not None:
        raise typer.BadParameter("shifts the simulated traffic: not with --from-tlc", param_hint="--drift")
    try:
        events_per_s = float(rate.removesuffix("/s"))
    except ValueError:
        raise typer.BadParameter(f"{rate!r}: expected events a second, e.g. 500 or 500/s") from None
    stopping = threading.Event()  # set by SIGTERM/Ctrl-C, even before the backend exists
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    settings = load_settings()
    require_topics(make_admin(settings), settings, [settings.topics.events, settings.topics.predictions("duration")])
    # compiled, as the services and the web backend serve it: scikit-learn's predict of the ensemble
    # was 2/3 of the backend's time
    initial = load_served("initial_duration", settings.compiled_dir if settings.native_models else None,
                          settings.predict_threads)
    backend = Backend(settings, initial, stop_event=stopping)
    if from_tlc is not None:
        chunks = tlc_replay(from_tlc, seed=seed)
        first = next(chunks, None)
        if first is not None:
            warn_if_older_than_retention(settings, float(first[0]["requested_s"].min()))
            chunks = itertools.chain([first], chunks)
        pace = {"speedup": speedup} if speedup else {"rate": events_per_s}
    else:
        chunks = simulated(rides, seed=seed, drift=drift)
        pace = {"rate": events_per_s, "live": True}

    def show(stats: PublishStats) -> None:
        err.print(f"\r{stats.rate:8.0f} msg/s  {stats.events:>9} events  {stats.acked:>9} acknowledged  "
                  f"{stats.failed} failed  {stats.rides} rides", end="")

    stats = backend.publish(chunks, on_progress=None if quiet else show, **pace)
    err.print(f"\nsent {stats.events} events of {stats.rides} rides ({stats.produced} messages with the "
              f"initial estimates): {stats.acked} acknowledged, {stats.failed} failed")
    if stats.failed:
        raise typer.Exit(1)


def warn_if_older_than_retention(settings: Settings, oldest_s: float) -> None:
    """The broker deletes messages by their timestamps: trips older than the events topic's
    retention would vanish at its next retention check (every 5 minutes), before anyone replays them."""
    from shared.contract.topics import describe_topics
    from shared.kafka.clients import make_admin

    (info,) = describe_topics(make_admin(settings), [settings.topics.events])
    age_h = (time.time() - oldest_s) / 3600
    if info is not None and info.retention_ms is not None and 0 <= info.retention_ms < age_h * 3600 * 1000:
        err.print(f"warning: these trips are {age_h / 24:,.0f} days old and {info.name} keeps messages "
                  f"{info.retention_ms / 3_600_000:,.0f} h, so the broker will delete them within minutes: "
                  "create the topics with RIDESTREAM_RETENTION_HOURS=0 (keep forever) or longer than their age")
