"""The loops the benchmark compares on the same events, each with its own consumer group:

* passthrough — consume and produce the same bytes, no decoding, no model: the ceiling;
* ridestream — the shipped tip service (the runtime `ridestream consume tip` runs);
* naive — the course-style loop: poll one message, validate it, predict one row, produce, commit.

Each returns how many events it scored and the seconds from its first message to its last
acknowledged output, so start-up and group joins are not counted against anyone.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from confluent_kafka import Producer, TopicPartition

from consumers.runtime import Runtime
from consumers.services import TIP
from shared.contract.codec import decode_event, encode_dict
from shared.contract.events import prediction_record
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

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def ride_requests(n: int, seed: int = 0) -> list[dict]:
    """``n`` simulated ride_requested events (contract dicts), fitted to the real sample."""
    cal = simulator.fit(sample_trips())
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


def passthrough(settings: Settings, source: str, sink: str, n: int, timeout: float = 300) -> Measure:
    consumer = make_consumer(settings, _group(settings, "passthrough"))
    producer = make_producer(settings)
    consumer.subscribe([source])
    moved, started = 0, None
    deadline = time.monotonic() + timeout
    while moved < n and time.monotonic() < deadline:
        msgs = consumer.consume(num_messages=settings.batch_size, timeout=0.1)
        if not msgs:
            continue
        started = started or time.monotonic()
        last: dict[int, int] = {}
        for m in msgs:
            if m.error() is None:
                produce(producer, sink, m.value(), m.key())
                last[m.partition()] = m.offset()
                moved += 1
        producer.poll(0)
        consumer.commit(offsets=[TopicPartition(source, p, o + 1) for p, o in last.items()], asynchronous=True)
    flush_all(producer)
    seconds = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return Measure(moved, seconds)


def shipped(settings: Settings, source: str, sink: str, models: dict[str, Model], n: int, timeout: float = 300) -> Measure:
    """The tip service's own runtime, as `ridestream consume tip` runs it."""
    runtime = Runtime(TIP, settings, models, group_id=_group(settings, "ridestream"), input_topic=source,
                      output_topic=sink)
    return _timed(runtime, n, timeout)


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
    """Run ``runtime`` in a thread until it has made ``n`` predictions; the clock starts when the
    first batch arrives and stops when the n-th prediction is handed to the producer."""
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
    while runtime.totals.predictions < n and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.01)
    ended = time.monotonic()
    runtime.stop()
    worker.join(60)
    return Measure(runtime.totals.predictions, ended - started[0] if started else 0.0)


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


def naive(settings: Settings, source: str, sink: str, model: Model, n: int, max_seconds: float = 20.0) -> Measure:
    """One message at a time: poll, validate, predict one row, produce (and wait), commit."""
    consumer = make_consumer(settings, _group(settings, "naive"))
    producer = make_producer(settings, **{"linger.ms": 0})
    consumer.subscribe([source])
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
        value = float(model.predict_events([event])[0])
        prediction = prediction_record("tip", model.version, event.ride_id, event.event_id, event.event_time,
                                       round(value, 3), datetime.now(timezone.utc))
        producer.produce(sink, key=msg.key(), value=encode_dict(prediction))
        producer.flush(10)
        consumer.commit(message=msg, asynchronous=False)
        done += 1
    seconds = time.monotonic() - (started or time.monotonic())
    consumer.close()
    return Measure(done, seconds)
