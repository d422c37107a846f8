"""The web backend's pure parts: applying rides.backend.state records (the race rules every replica
applies alike), the per-service SSE cursor, and fan-out that never waits for a slow client."""

from __future__ import annotations

import asyncio

import orjson

from producer.web.fanout import Hub
from producer.web.table import RideTable, format_cursor, parse_cursor


def ride(seq: int, stage: str, writer: str = "w") -> bytes:
    return orjson.dumps({"kind": "ride", "ride_id": "r1", "seq": seq, "stage": stage, "writer": writer,
                         "updated_at": "2026-11-30T08:00:00Z", "request": {}})


def prediction(service: str, value: float, ride_id: str = "r1") -> bytes:
    return orjson.dumps({"ride_id": ride_id, "service": service, "value": value, "model_version": "v1"})


def test_the_first_valid_change_wins_and_a_repeat_of_the_winner_is_harmless():
    t = RideTable()
    assert t.apply_state("r1", ride(0, "requested")).applied
    assert t.apply_state("r1", ride(1, "started", "a")).applied
    lost = t.apply_state("r1", ride(1, "started", "b"))  # the other replica's, read second
    assert not lost.applied and t.ride("r1")["writer"] == "a" and t.rejected == 1
    assert t.apply_state("r1", ride(1, "started", "a")).applied  # the loser writes the winner again
    assert not t.apply_state("r1", ride(2, "started", "a")).applied  # started after started
    assert t.apply_state("r1", ride(2, "completed", "a")).applied
    assert not t.apply_state("r1", ride(3, "in_progress", "a")).applied  # nothing after completed


def test_an_unknown_ride_takes_its_latest_record_as_compaction_left_it():
    t = RideTable()
    assert t.apply_state("r1", ride(5, "in_progress")).applied and t.ride("r1")["seq"] == 5


def test_idempotency_keys_the_first_record_wins():
    t = RideTable()
    first = orjson.dumps({"kind": "idempotency", "key": "k", "ride_id": "a", "writer": "x", "request_hash": "h", "response": {}})
    second = orjson.dumps({"kind": "idempotency", "key": "k", "ride_id": "b", "writer": "y", "request_hash": "h", "response": {}})
    assert t.apply_state("idempotency/k", first).applied and not t.apply_state("idempotency/k", second).applied
    assert t.idempotent("k")["ride_id"] == "a"


def test_memory_is_bounded_per_replica_and_per_ride():
    t = RideTable(max_rides=2, per_ride=2, max_followed=3)
    for i in range(10):
        t.add_prediction("tip", i, prediction("tip", i, ride_id=f"r{i}"))
        t.apply_state(f"r{i}", orjson.dumps({"kind": "ride", "ride_id": f"r{i}", "seq": 0, "stage": "requested",
                                            "writer": "w", "request": {}}))
    assert list(t.rides) == ["r7", "r8", "r9"] and list(t.states) == ["r8", "r9"]
    for i in range(10, 15):
        t.add_prediction("duration", i, prediction("duration", i, ride_id="r9"))
    assert [x.offset for x in t.rides["r9"].landed] == [13, 14]
    assert set(t.latest("r9")) == {"tip", "duration"} and t.latest("r9")["tip"]["value"] == 9  # the latest per service stays


def test_a_cursor_resumes_after_what_was_sent_and_skips_what_was_held_already():
    t = RideTable()
    t.add_prediction("duration", 4, prediction("duration", 1))
    _, tip = t.add_prediction("tip", 9, prediction("tip", 2))
    t.add_prediction("duration", 6, prediction("duration", 3))
    assert t.add_prediction("duration", 6, prediction("duration", 3)) is None  # read again
    cursor = parse_cursor(tip.frame.split(b"\n")[0][4:].decode())
    assert cursor == {"duration": 4, "tip": 9, "cost": -1} and format_cursor(cursor) == "4,9,-1"
    assert [x.offset for x in t.since("r1", cursor)] == [6]
    assert parse_cursor("garbage") is None and parse_cursor("1,2") is None


def test_a_slow_client_overflows_alone_and_a_disconnect_frees_it():
    async def scenario() -> None:
        t, hub = RideTable(), Hub(max_queue=3)
        slow, fast, everything = hub.join("r1"), hub.join("r1"), hub.join(None)
        for i in range(5):
            landed = t.add_prediction("duration", i, prediction("duration", i))
            hub.dispatch(*landed)
            fast.pending.clear()  # this one keeps up
        assert slow.overflowed and not fast.overflowed and everything.closed
        assert hub.overflows >= 2 and len(slow.pending) <= 3
        for client in (slow, fast, everything):
            hub.leave(client)
        assert hub.clients == 0 and hub.by_ride == {}

    asyncio.run(scenario())
