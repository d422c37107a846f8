"""The dead-letter queue on the real broker: a running service dead-letters bad messages, `dlq show`
summarises them, `dlq redrive` re-publishes once what the contract accepts now — twice in a row,
it publishes nothing more."""

from __future__ import annotations

import re
import subprocess

import orjson

from shared.contract.codec import encode_dict
from shared.kafka.clients import make_producer
from tests.integration.fleet import RIDESTREAM, Fleet, fleet_env, read_all, wait_for

RIDE = {"schema_version": 1, "event_id": "late-req", "event_type": "ride_requested", "ride_id": "late",
        "event_time": "2026-11-30T08:00:00Z", "pickup_zone": 142, "dropoff_zone": 236, "trip_distance_mi": 2.5,
        "passenger_count": 1, "payment_type": 1, "service": "yellow"}


def ridestream(kafka, *args: str) -> str:
    proc = subprocess.run([*RIDESTREAM, *args], env={**kafka.env(), "COLUMNS": "250"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return " ".join(re.sub("[\u2500-\u257f]", " ", proc.stdout).split())  # the table's lines out


def test_show_then_redrive_once_what_is_valid_now(kafka):
    kafka.create_contract_topics()
    topics = kafka.settings.topics
    producer = make_producer(kafka.settings)
    producer.produce(topics.events, key=b"bad-1", value=b"\xff\xfe not even UTF-8")
    producer.produce(topics.events, key=b"bad-2", value=b'{"event_type": "ride_teleported"}')
    assert producer.flush(30) == 0
    fleet = Fleet(fleet_env(kafka.env()))
    try:
        fleet.start("tip")
        fleet.start("cost")
        assert wait_for(lambda: len(read_all(kafka.settings, topics.dlq)) == 4)  # each bad event, once per service
    finally:
        fleet.close()
    # a valid event that an older service refused (as a contract change would make it valid now):
    # dead-lettered by two services, from one source offset
    for service in ("tip", "cost"):
        producer.produce(topics.dlq, key=b"late", value=encode_dict(RIDE), headers=[
            ("error.type", b"schema"), ("error.message", b"service: unknown value"),
            ("source.topic", topics.events.encode()), ("source.partition", b"0"), ("source.offset", b"999"),
            ("service", service.encode())])
    assert producer.flush(30) == 0

    shown = ridestream(kafka, "dlq", "show")
    assert "6 dead letters" in shown
    for reason, count in (("json", "2"), ("unknown_event_type", "2"), ("schema", "2")):
        assert f"{reason} {count}" in shown
    assert "tip 1, cost 1" in shown or "cost 1, tip 1" in shown

    dry = ridestream(kafka, "dlq", "redrive", "--dry-run")
    assert "would redrive 1 to" in dry and "2 still invalid (json 1, unknown_event_type 1)" in dry
    assert not any(m.key() == b"late" for m in read_all(kafka.settings, topics.events))

    first = ridestream(kafka, "dlq", "redrive")
    assert f"redriven 1 to {topics.events}" in first
    second = ridestream(kafka, "dlq", "redrive")
    assert f"redriven 0 to {topics.events}; 1 already redriven earlier" in second
    again = [m for m in read_all(kafka.settings, topics.events) if m.key() == b"late"]
    assert len(again) == 1  # published once, whatever the number of runs and of services that refused it
    assert orjson.loads(again[0].value()) == RIDE
    assert dict(again[0].headers())["redriven.from"] == f"{topics.events}/0/999".encode()
    assert "redriven 0" in ridestream(kafka, "dlq", "redrive", "--reason", "json")
