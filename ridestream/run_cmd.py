"""``ridestream run``: the main job.

Until the fleet lands, it brings up the broker and the contract topics, then sends one real TLC
trip through ``rides.events`` as its contract events — the request stamped with the initial
duration model's estimate — and reads them back, decoded and validated.
"""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition

from ridestream.broker_cmd import ensure_local_broker
from ridestream.console import out
from shared.artifacts import load_model
from shared.codec import decode_event, encode
from shared.errors import RidestreamError
from shared.kafka import ensure_reachable, make_admin, make_consumer, make_producer
from shared.settings import load_settings
from shared.tlc import SAMPLE_TRIPS, clean_trips, read_trip_file, trip_events
from shared.topics import create_topics


def run() -> None:
    """Start the broker if needed, create the topics, round-trip one real ride's events."""
    settings = load_settings()
    ensure_local_broker(settings)
    admin = make_admin(settings)
    ensure_reachable(admin, settings)
    created = create_topics(admin, settings.topic_specs())
    out.print(f"topics ready on {settings.bootstrap}: {', '.join(created)}")

    trips, _ = clean_trips(read_trip_file(SAMPLE_TRIPS))
    trips = trips.head(1)
    events = trip_events(trips, id_prefix=f"demo-{int(time.time())}")[0]
    # as the backend will: stamp the request with the in-process initial duration estimate
    estimate = float(load_model("initial_duration").predict_events(events[:1])[0])
    events[0] = events[0].model_copy(update={"initial_duration_min": round(estimate, 2)})

    producer = make_producer(settings)
    acked: list = []
    for event in events:
        producer.produce(
            settings.topics.events, key=event.ride_id.encode(), value=encode(event),
            timestamp=int(event.event_time.timestamp() * 1000),
            on_delivery=lambda err, msg: acked.append((err, msg)),
        )
    producer.flush(settings.connect_timeout_s)
    failed = [err for err, _ in acked if err is not None]
    if len(acked) != len(events) or failed:
        raise RidestreamError(f"the broker did not acknowledge the events: {failed or 'timed out'}")
    out.print(f"sent {len(events)} events of ride {events[0].ride_id} (partition {acked[0][1].partition()})")

    consumer = make_consumer(settings, group_id=f"{settings.namespace}ridestream-run-check")
    consumer.assign([TopicPartition(m.topic(), m.partition(), m.offset()) for _, m in acked[:1]])
    received = []
    deadline = time.monotonic() + settings.connect_timeout_s
    while len(received) < len(events) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            received.append(decode_event(msg.value()))
    consumer.close()
    if received != events:
        raise RidestreamError("the events read back differ from those sent")
    for event in received:
        out.print(f"  {event.event_type:<15} {encode(event).decode()}", markup=False)
    out.print("[green]round trip ok[/]: the contract events came back intact")
    if settings.uses_local_broker:
        out.print("the local broker keeps running; `ridestream broker stop` stops it")
