"""``ridestream evaluate --online``: the online evaluator, until SIGTERM or Ctrl-C.

It joins every prediction to its ride's actuals and publishes windowed MAE per service, model
version, variant and stage to ``rides.model_quality`` and to ``/metrics``
(:mod:`consumers.evaluator`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ridestream.console import err
from shared.errors import RidestreamError

if TYPE_CHECKING:  # annotations only: the command line imports these when a command runs
    from consumers.evaluator import EvaluatorTotals, OnlineEvaluator


def online(metrics_port: int = 0, window_s: float = 600, publish_every_s: float = 5,
           ttl_s: float = 3 * 3600, max_rides: int = 200_000, retain_s: float = 3600,
           on_tick: Callable[[OnlineEvaluator], None] | None = None) -> EvaluatorTotals:
    """Run the online evaluator until SIGTERM or Ctrl-C (which finish the batch in hand, publish
    the figures once more and stop); print a one-line summary. ``metrics_port`` 0 takes
    ``RIDESTREAM_METRICS_PORT`` (0 there too: no /metrics). ``on_tick`` runs in the evaluator's
    loop every ``publish_every_s`` once it has caught up (a rollout controller)."""
    from consumers.evaluator import OnlineEvaluator, ensure_quality_topic
    from shared.kafka.clients import make_admin, require_topics
    from shared.kafka.settings import load_settings

    stopping = threading.Event()  # set by SIGTERM/Ctrl-C, even before the evaluator exists
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    settings = load_settings()
    require_topics(make_admin(settings), settings, [settings.topics.events])  # one line if no broker or topics
    ensure_quality_topic(settings)
    announced = threading.Event()

    def tick(evaluator: OnlineEvaluator) -> None:
        if not announced.is_set():
            announced.set()
            err.print(f"evaluator: caught up ({evaluator.state.rides_held} rides held); publishing every "
                      f"{publish_every_s:g} s")
        if on_tick is not None:
            on_tick(evaluator)

    evaluator = OnlineEvaluator(settings, window_s=window_s, publish_every_s=publish_every_s, ttl_s=ttl_s,
                                max_rides=max_rides, retain_s=retain_s, on_tick=tick, stop_event=stopping)
    port = metrics_port or settings.metrics_port
    try:
        evaluator.metrics.serve(port)
    except OSError as exc:
        raise RidestreamError(f"cannot serve /metrics on port {port}: {exc.strerror}; choose another "
                              "with --metrics-port or RIDESTREAM_METRICS_PORT") from None
    err.print(f"evaluator: reading {settings.topics.events} and the prediction topics as {evaluator.group_id}; "
              f"MAE over the last {window_s:g} s to {settings.topics.model_quality}"
              + (f", /metrics on port {port}" if port else ""))
    totals = evaluator.run()
    c = totals.counts
    err.print(f"evaluator: stopped after {totals.messages} messages: {c.completions} rides completed, "
              f"{c.joined} predictions judged, {c.expired_rides + c.evicted_rides} rides expired unjudged, "
              f"{totals.malformed} unreadable; {totals.rides_held} rides held")
    return totals
