"""The foundation on a real broker: topics, a contract round trip, persistence across a restart,
and a clear error when no broker answers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from broker.local import LocalBroker, free_port
from shared.contract.codec import decode_event, encode
from shared.contract.events import RideCompleted, RideProgress, RideRequested, RideStarted
from shared.contract.topics import TopicSpec, create_topics, describe_topics
from shared.kafka.clients import make_admin, make_consumer, make_producer

RIDESTREAM = [sys.executable, "-m", "ridestream.cli"]
T0 = "2019-03-01T08:15:00Z"


def ride(ride_id: str) -> list:
    common = {"ride_id": ride_id, "event_time": T0}
    return [
        RideRequested.model_validate({**common, "event_id": f"{ride_id}-1", "pickup_zone": 142,
                                      "dropoff_zone": 236, "trip_distance_mi": 2.2, "passenger_count": 1,
                                      "payment_type": 1, "service": "yellow", "initial_duration_min": 11.0},
                                     strict=False),
        RideStarted.model_validate({**common, "event_id": f"{ride_id}-2"}, strict=False),
        RideProgress.model_validate({**common, "event_id": f"{ride_id}-3", "elapsed_min": 1.0,
                                     "distance_done_mi": 0.2, "distance_left_mi": 2.0}, strict=False),
        RideCompleted.model_validate({**common, "event_id": f"{ride_id}-4", "duration_min": 12.5,
                                      "fare_amount": 10.5, "tip_amount": 2.0, "total_amount": 16.3},
                                     strict=False),
    ]


def produce(settings, topic: str, events: list) -> list:
    producer = make_producer(settings)
    acked = []
    for e in events:
        producer.produce(topic, key=e.ride_id.encode(), value=encode(e),
                         on_delivery=lambda err, msg: acked.append((err, msg)))
    assert producer.flush(30) == 0
    assert [err for err, _ in acked] == [None] * len(events)
    return [msg for _, msg in acked]


def consume(settings, group: str, topic: str, count: int, timeout: float = 30) -> list:
    consumer = make_consumer(settings, group)
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got.append(msg)
    if got:
        last = {(m.topic(), m.partition()): m.offset() for m in got}
        consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()], asynchronous=False)
    consumer.close()
    return got


def test_topic_creation_is_idempotent(kafka):
    week = kafka.settings.model_copy(update={"retention_hours": 168})  # the tests' own topics keep all
    first = create_topics(make_admin(week), week.topic_specs())
    assert set(first.values()) == {"created"}
    assert kafka.create_contract_topics() == dict.fromkeys(first, "exists")
    infos = describe_topics(make_admin(kafka.settings), kafka.settings.topics.all())
    assert [(i.name, i.partitions) for i in infos] == [
        (kafka.settings.topics.events, 3), *((kafka.settings.topics.predictions(s), 3) for s in ("duration", "tip", "cost")),
        (kafka.settings.topics.dlq, 1), (kafka.settings.topics.control, 1), (kafka.settings.topics.control_audit, 1),
        (kafka.settings.topics.model_quality, 1), (kafka.settings.topics.backend_state, 3),
        (kafka.settings.topics.changelog("duration"), 3),  # partitioned like rides.events
    ]
    assert {i.retention_ms for i in infos if not i.compacted} == {7 * 24 * 3600 * 1000}
    assert {i.name for i in infos if i.compacted} == {kafka.settings.topics.control, kafka.settings.topics.model_quality,
                                                      kafka.settings.topics.backend_state,
                                                      kafka.settings.topics.changelog("duration")}


def test_cli_topics_create_and_describe(kafka):
    env = {**kafka.env(), "RIDESTREAM_EVENTS_PARTITIONS": "4"}
    created = subprocess.run([*RIDESTREAM, "topics", "create"], env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    # events, 3 predictions, DLQ, control, audit, model quality, backend state, the duration state changelog
    assert created.stdout.count("created") == 10
    again = subprocess.run([*RIDESTREAM, "topics", "create"], env=env, capture_output=True, text=True, timeout=60)
    assert again.stdout.count("exists") == 10
    described = subprocess.run([*RIDESTREAM, "topics", "describe"], env=env, capture_output=True, text=True, timeout=60)
    assert described.returncode == 0
    assert re.search(rf"{re.escape(kafka.settings.topics.events)}\s+│\s+4\s+│", described.stdout)
    assert "missing" not in described.stdout
    assert re.search(rf"{re.escape(kafka.settings.topics.control)}\s+│\s+1\s+│\s+compacted", described.stdout)


def test_contract_events_round_trip_keyed_by_ride(kafka):
    kafka.create_contract_topics()
    events = ride("r-1") + ride("r-2") + ride("r-3")
    produce(kafka.settings, kafka.settings.topics.events, events)
    got = consume(kafka.settings, kafka.group(), kafka.settings.topics.events, len(events))
    assert len(got) == len(events)
    partitions: dict[str, set[int]] = {}
    by_ride: dict[str, list] = {}
    for msg in got:
        event = decode_event(msg.value())
        assert msg.key() == event.ride_id.encode()
        partitions.setdefault(event.ride_id, set()).add(msg.partition())
        by_ride.setdefault(event.ride_id, []).append(event)
    assert all(len(p) == 1 for p in partitions.values())  # a ride's events share a partition…
    for ride_id, received in by_ride.items():
        assert received == ride(ride_id)  # …and arrive whole, in order


def test_unreachable_bootstrap_is_a_clear_one_line_error(kafka):
    env = {**kafka.env(), "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
           "RIDESTREAM_CONNECT_TIMEOUT_S": "3"}
    proc = subprocess.run([*RIDESTREAM, "topics", "describe"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: no Kafka broker answered at 127.0.0.1:") and "within 3s" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="the local broker needs java")
def test_local_broker_restart_keeps_topics_messages_and_offsets(tmp_path: Path, kafka):
    home = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env |= {"RIDESTREAM_STATE_DIR": str(home), "RIDESTREAM_BROKER_PORT": str(free_port()),
            "RIDESTREAM_BROKER_CONTROLLER_PORT": str(free_port())}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*RIDESTREAM, *args], env=env, capture_output=True, text=True, timeout=180)

    started = cli("broker", "start")
    assert started.returncode == 0, started.stderr
    bootstrap = f"localhost:{env['RIDESTREAM_BROKER_PORT']}"
    assert started.stdout.strip().splitlines()[-1] == bootstrap
    assert "already running" in cli("broker", "start").stdout
    assert cli("broker", "status").returncode == 0
    try:
        settings = kafka.settings.model_copy(update={"bootstrap_servers": bootstrap})
        admin = make_admin(settings)
        create_topics(admin, [TopicSpec("kept", 2)])
        produce(settings, "kept", ride("r-9"))
        assert len(consume(settings, "kept-group", "kept", 2, timeout=30)) >= 2

        assert "broker stopped" in cli("broker", "stop").stdout
        assert cli("broker", "status").returncode == 3
        assert cli("broker", "start").returncode == 0

        admin = make_admin(settings)
        assert describe_topics(admin, ["kept"])[0].partitions == 2
        # the messages are still there, and the group's committed offsets too
        consumer = make_consumer(settings, "fresh-reader")
        parts = [TopicPartition("kept", p, 0) for p in range(2)]
        consumer.assign(parts)
        seen = []
        deadline = time.monotonic() + 30
        while len(seen) < 4 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                seen.append(decode_event(msg.value()))
        consumer.close()
        assert seen == ride("r-9")
        committed = make_consumer(settings, "kept-group").committed(parts, timeout=10)
        assert sum(max(tp.offset, 0) for tp in committed) >= 2
    finally:
        cli("broker", "stop")
    assert "logs" and LocalBroker(home / "broker").tail(5)


def test_services_without_their_topics_say_how_to_create_them(kafka):
    for args in (["consume", "tip"], ["produce", "--rides", "1"]):
        proc = subprocess.run([*RIDESTREAM, *args], env=kafka.env(), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert proc.stderr.strip().startswith("error: no topic ") and "ridestream topics create" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
