"""The backend: publishes ride lifecycles to ``rides.events`` (key = ride_id, message time = event
time) and gives each rider the initial duration estimate at once — stamped on the request, and as
a prediction on ``rides.predictions.duration`` marked ``initial``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from producer.sources import Chunk
from shared.contract.codec import encode_dict
from shared.contract.events import prediction_record
from shared.kafka.clients import flush_all, make_producer, produce
from shared.kafka.settings import Settings
from shared.ml.artifacts import Model
from shared.ml.features import request_columns

INITIAL_SERVICE_ID = "duration.initial"  # prediction ids of the backend's estimates differ from the service's


@dataclass
class PublishStats:
    events: int = 0  # ride events sent (the backend's estimates are counted in produced only)
    produced: int = 0
    acked: int = 0
    failed: int = 0
    rides: int = 0
    started: float = 0.0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.acked / elapsed if elapsed > 0 else 0.0


class Backend:
    def __init__(self, settings: Settings, initial_model: Model, stop_event: threading.Event | None = None):
        self.settings = settings
        self.model = initial_model
        # every delivery report counts (acked or failed); the callback is the producer's default
        # rather than an argument of each produce call, which costs ~1 µs per message
        self.producer = make_producer(settings, on_delivery=self._on_delivery)
        self.stats = PublishStats(started=time.monotonic())
        self._stop = stop_event or threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.stats.acked += 1
        else:
            self.stats.failed += 1

    def _produce(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        produce(self.producer, topic, value, key, timestamp=timestamp_ms)
        self.stats.produced += 1

    def stamp_initial(self, chunk: Chunk, at: float | None = None) -> None:
        """Estimate every request of the chunk with one ``predict`` and stamp it on the request.

        ``at`` (epoch seconds): the chunk goes out live about then, each event stamped with the
        time it is sent, so the estimates are for that time's hour and weekday — what the duration
        service sees when it scores the published request with the same model (they differ only
        if New York's hour turns while the chunk is sent). Without it, the rides' own times."""
        table, events = chunk
        columns = request_columns(table)
        if at is not None:
            columns["event_time"] = np.full(len(table), at)
        estimates = np.round(self.model.predict_columns(columns), 2)
        by_ride = dict(zip(table["ride_index"].tolist(), estimates.tolist()))
        for event in events:
            if event["event_type"] == "ride_requested":
                event["initial_duration_min"] = by_ride[int(event["ride_id"].rsplit("-", 1)[1])]

    def initial_prediction(self, request: dict) -> dict:
        return prediction_record(
            "duration", self.model.version, request["ride_id"], request["event_id"], request["event_time"],
            request["initial_duration_min"], datetime.now(timezone.utc), id_service=INITIAL_SERVICE_ID, initial=True,
        )

    def publish(self, chunks: Iterable[Chunk], rate: float = 0.0, speedup: float | None = None,
                live: bool = False, on_progress: Callable[[PublishStats], None] | None = None) -> PublishStats:
        """Publish every event of every chunk. ``rate`` paces to that many events a second (0 = as
        fast as the broker takes them); ``speedup`` instead replays at event time ÷ speedup.

        ``live`` stamps each event with the time it is sent: a simulated day is compressed into
        however long the rate takes, and the broker rejects times far in the future anyway.
        """
        topics = self.settings.topics
        t0 = time.monotonic()
        first_event_s: float | None = None
        last_report = 0.0
        for chunk in chunks:
            self.stamp_initial(chunk, at=time.time() if live else None)
            self.stats.rides += len(chunk[0])
            for event in chunk[1]:
                if self._stop.is_set():
                    return self.finish()
                if live:
                    event_s = time.time()
                    event["event_time"] = datetime.fromtimestamp(event_s, timezone.utc)
                else:
                    event_s = _epoch(event["event_time"])
                if speedup:
                    first_event_s = event_s if first_event_s is None else first_event_s
                    _sleep_until(t0 + (event_s - first_event_s) / speedup, self._stop)
                elif rate > 0 and self.stats.events % 50 == 0:
                    _sleep_until(t0 + self.stats.events / rate, self._stop)
                key = event["ride_id"].encode()
                ts = int(event_s * 1000)
                self._produce(topics.events, key, encode_dict(event), ts)
                self.stats.events += 1
                if event["event_type"] == "ride_requested":
                    prediction = self.initial_prediction(event)
                    self._produce(topics.predictions("duration"), key, encode_dict(prediction), ts)
                self.producer.poll(0)
                now = time.monotonic()
                if on_progress and now - last_report > 0.5:
                    on_progress(self.stats)
                    last_report = now
        return self.finish()

    def finish(self) -> PublishStats:
        flush_all(self.producer)
        return self.stats


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def _sleep_until(deadline: float, stop: threading.Event) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        stop.wait(delay)
