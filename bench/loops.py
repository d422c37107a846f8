"""The loops the benchmark compares on the same events, each with its own consumer group:

* passthrough — consume and produce the same bytes, no decoding, no model: the ceiling;
* ridestream — the shipped tip service (the runtime `ridestream consume tip` runs);
* naive — the course-style loop: poll one message, validate it, predict one row, produce, commit.

Each returns how many events it scored and the seconds from its first message to its last
acknowledged output, so start-up and group joins are not counted against anyone — or, given a
:class:`~bench.window.SteadyWindow`, the events and seconds of a steady window sized by time after a
warm-up (the throughput phases of ``bench.run``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache

import numpy as np
from confluent_kafka import Producer, TopicPartition

from bench.window import SteadyWindow
from consumers.runtime import Runtime
from consumers.scoring import RideMemory, ServiceSpec, score_batch
from consumers.services import TIP
from shared.contract.codec import decode_event, encode_dict
from shared.data import simulator
from shared.data.tlc import sample_trips
from shared.kafka.clients import flush_all, make_consumer, make_producer, produce
from shared.kafka.settings import Settings
from shared.ml.artifacts import Model


@dataclass
class Measure:
    events: int
    seconds: float
    cpu_busy: float | None = None  # share of all the machine's cores busy meanwhile (Linux)
    full_window: bool | None = None  # sized by time: False when the events ran out before the window's end

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@cache
def calibration() -> simulator.Calibration:
    """The simulator fitted to the shipped real sample (once per process)."""
    return simulator.fit(sample_trips())


def lifecycles(n: int, seed: int = 0) -> list[dict]:
    """``n`` events of whole simulated ride lifecycles in event-time order, as the backend's
    simulator makes them: each ride's request, start, a progress event a minute and completion,
    in their natural proportions (the rides last in time may be cut short)."""
    rides_n = max(1, n // 15 + 1)
    while True:
        rides = simulator.simulate(calibration(), rides_n, seed=seed)
        events = simulator.lifecycle_events(rides, simulator.progress(rides, seed=seed), f"l{seed}")
        if len(events) >= n:
            return events[:n]
        rides_n = int(rides_n * n / max(len(events), 1) * 1.1) + 1


def mix(events: list[dict]) -> dict[str, int]:
    """How many events of each type."""
    return dict(Counter(e["event_type"] for e in events))


def ride_requests(n: int, seed: int = 0) -> list[dict]:
    """``n`` simulated ride_requested events (contract dicts), fitted to the real sample."""
    cal = calibration()
    rides = simulator.simulate(cal, n, seed=seed)
    stamps = np.datetime_as_string((rides["requested_s"].to_numpy() * 1000).astype("datetime64[ms]"),
                                   unit="ms", timezone="UTC").tolist()
    cols = {c: rides[c].tolist() for c in ("pickup_zone", "dropoff_zone", "trip_distance_mi",
                                            "passenger_count", "payment_type", "service")}
    prefix = f"b{seed}"
    return [{"schema_version": 1, "event_id": f"{prefix}-{i}-req", "event_type": "ride_requested",
             "ride_id": f"{prefix}-{i}", "event_time": stamps[i], **{c: v[i] for c, v in cols.items()}}
            for i in range(n)]


def preproduce(settings: Settings, topic: str, events: list[dict], producer: Producer | None = None) -> None:
    """Produce ``events`` keyed by ride_id and wait until all are acknowledged (with ``producer``,
    e.g. a transactional one, instead of a new one)."""
    producer = producer or make_producer(settings)
    for e in events:
        produce(producer, topic, encode_dict(e), e["ride_id"].encode())
    flush_all(producer)


def _group(settings: Settings, name: str) -> str:
    return f"{settings.namespace}bench-{name}-{uuid.uuid4().hex[:6]}"


def passthrough(settings: Settings, source: str, sink: str, n: int, timeout: float = 300,
                window: SteadyWindow | None = None) -> Measure:
    """Consume and produce the same bytes: ``n`` events, or with ``window`` until it is over."""
    consumer = make_consumer(settings, _group(settings, "passthrough"))
    producer = make_producer(settings)
    consumer.subscribe([source])
    moved, started = 0, None
    deadline = time.monotonic() + timeout
    while moved < n and time.monotonic() < deadline:
        msgs = consumer.consume(num_messages=settings.batch_size, timeout=0.1)
        if not msgs:
            continue
        if started is None:
            started = time.monotonic()
            if window is not None:
                window.tick(0)
        last: dict[int, int] = {}
        for m in msgs:
            if m.error() is None:
                produce(producer, sink, m.value(), m.key())
                last[m.partition()] = m.offset()
                moved += 1
        producer.poll(0)
        consumer.commit(offsets=[TopicPartition(source, p, o + 1) for p, o in last.items()], asynchronous=True)
        if window is not None and window.tick(moved):
            break
    flush_all(producer)
    seconds = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return _windowed(window) if window is not None else Measure(moved, seconds)


def _windowed(window: SteadyWindow) -> Measure:
    steady = window.steady()
    return Measure(steady.events, steady.seconds, full_window=steady.full)


def shipped(settings: Settings, source: str, sink: str, models: dict[str, Model], n: int, timeout: float = 300,
            spec: ServiceSpec = TIP, window: SteadyWindow | None = None) -> Measure:
    """A service's own runtime (the tip service's by default), as `ridestream consume SERVICE` runs it:
    ``n`` events, or with ``window`` until it is over."""
    runtime = Runtime(spec, settings, models, group_id=_group(settings, "ridestream"), input_topic=source,
                      output_topic=sink)
    return _timed(runtime, n, timeout) if window is None else _timed_window(runtime, window, timeout)


def under_plan(settings: Settings, source: str, sink: str, models: dict[str, Model], n: int,
               load: Callable[[str, str], Model], timeout: float = 300) -> tuple[Measure, str]:
    """The same runtime as :func:`shipped`, following the deployment plan in force on the control
    topic of ``settings``' namespace (``follow_plans``, as `ridestream consume tip` runs by default):
    the plan is read, its candidate loaded and the deployment swapped in before the first batch,
    so the clock sees only scoring under it. ``load(name, version)`` loads a version the plan
    names (from a bench model store). Returns the measure and what the runtime served."""
    runtime = Runtime(TIP, settings, models, group_id=_group(settings, "rollout"), input_topic=source,
                      output_topic=sink, follow_plans=True)
    runtime.follower.load = load  # the follower's loader (its constructor's ``load``): the bench's store
    measure = _timed(runtime, n, timeout)
    return measure, runtime.deployment.describe()


def _timed(runtime: Runtime, n: int, timeout: float) -> Measure:
    """Run ``runtime`` in a thread until it has taken ``n`` events; the clock starts when the
    first batch arrives and stops when the predictions of the n-th event are handed to the producer
    (on ride_requested events alone, each event is one prediction of the tip service)."""
    started: list[float] = []
    process = runtime.process

    def timed(msgs):  # the clock starts when the first batch arrives
        if not started:
            started.append(time.monotonic())
        return process(msgs)

    runtime.process = timed
    worker = threading.Thread(target=runtime.run, daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    while runtime.totals.consumed < n and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.01)
    ended = time.monotonic()
    runtime.stop()
    worker.join(60)
    return Measure(runtime.totals.consumed, ended - started[0] if started else 0.0)


def _timed_window(runtime: Runtime, window: SteadyWindow, timeout: float) -> Measure:
    """Run ``runtime`` in a thread until ``window`` is over, ticking it when the first batch arrives
    and as each batch's predictions are handed to the producer (the runtime's ``progress``)."""
    process, done = runtime.process, [0]

    def timed(msgs):
        if window.first is None:
            window.tick(0)
        return process(msgs)

    def progress(consumed: int) -> None:
        done[0] += consumed
        if window.tick(done[0]):
            runtime.stop()

    runtime.process, runtime.progress = timed, progress
    worker = threading.Thread(target=runtime.run, daemon=True)
    worker.start()
    worker.join(timeout)
    runtime.stop()
    worker.join(60)
    return _windowed(window)


def topic_size(settings: Settings, topic: str) -> int:
    """Messages in ``topic`` now (the sum of its partitions' end offsets minus their starts)."""
    consumer = make_consumer(settings, _group(settings, "size"))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def naive(settings: Settings, source: str, sink: str, models: dict[str, Model], n: int, max_seconds: float = 20.0,
          spec: ServiceSpec = TIP) -> Measure:
    """One message at a time: poll, validate, predict it (scikit-learn, one row), produce (and
    wait), commit — with the service's own rules (and ride memory), so any event mix is answered."""
    consumer = make_consumer(settings, _group(settings, "naive"))
    producer = make_producer(settings, **{"linger.ms": 0})
    consumer.subscribe([source])
    memory = RideMemory(spec.memory_size)
    done, started = 0, None
    deadline = time.monotonic() + max_seconds + 30
    while done < n and time.monotonic() < deadline:
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        if started is None:
            started = time.monotonic()
            deadline = started + max_seconds  # bounded in time as well as in count
        event = decode_event(msg.value())
        for part in score_batch(spec, models, memory, [event], datetime.now(timezone.utc)).parts:
            for key, value in zip(part.keys(), part.encoded()):
                producer.produce(sink, key=key, value=value)
        producer.flush(10)
        consumer.commit(message=msg, asynchronous=False)
        done += 1
    seconds = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return Measure(done, seconds)
