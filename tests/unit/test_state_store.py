"""The duration service's memory on its changelog, without a broker: every change becomes a record
in the partition of its ride (a tombstone on completion, eviction or expiry), records read back
restore the same memory, and a partition that leaves drops its rides without a tombstone."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from confluent_kafka import Message

from consumers.scoring import RideMemory, by_event_type, score_groups
from consumers.services import DURATION
from consumers.state import StateStore, decode_state, encode_state
from shared.contract.state import RideState
from shared.kafka.settings import Settings

T0 = datetime(2019, 3, 1, 8, tzinfo=timezone.utc).timestamp()


def store(**memory) -> StateStore:
    return StateStore(Settings(_env_file=None), RideMemory(track=True, **memory), "changelog")


def msg(ride_id: str, partition: int) -> Message:
    return Message(topic="events", partition=partition, offset=0, key=ride_id.encode(), value=b"", error=None)


class Ev:
    def __init__(self, ride_id: str):
        self.ride_id = ride_id


def test_changes_become_records_in_their_rides_partitions_and_completions_tombstones():
    s = store()
    s.memory.remember(["a", "b"], np.array([12.5, 30.0]), np.array([2.0, 8.1]), at=[T0, T0 + 1])
    records = s.records([Ev("a"), Ev("b")], [msg("a", 2), msg("b", 0)])
    assert [(p, k) for p, k, _ in records] == [(2, b"a"), (0, b"b")]
    state = RideState.model_validate_json(records[0][2])  # the contract's record
    assert (state.ride_id, state.initial_duration_min, state.trip_distance_mi) == ("a", 12.5, 2.0)
    assert state.requested_at.timestamp() == T0
    assert s.records([], []) == []  # taken once
    s.memory.forget(["a", "unknown"])
    assert s.records([Ev("a")], [msg("a", 2)]) == [(2, b"a", None)]
    assert s.partition_of == {"b": 0}


def test_evicted_and_expired_rides_are_tombstoned_in_their_partition():
    s = store(max_rides=2, ttl_s=3600)
    s.memory.remember(["a", "b"], np.ones(2), np.ones(2), at=[T0, T0 + 10])
    s.records([Ev("a"), Ev("b")], [msg("a", 1), msg("b", 1)])
    s.memory.remember(["c"], np.ones(1), np.ones(1), at=[T0 + 20])  # over max_rides: a goes
    assert (1, b"a", None) in s.records([Ev("c")], [msg("c", 2)])
    s.memory.remember(["d"], np.ones(1), np.ones(1), at=[T0 + 3615])  # an hour after b: b expires
    records = s.records([Ev("d")], [msg("d", 0)])
    assert (1, b"b", None) in records and len(s.memory) == 2


def test_records_read_back_restore_the_same_memory():
    entry = (17.25, 4.5, T0 + 0.5)
    assert decode_state(encode_state("r", entry)) == entry
    restored = RideMemory(track=True)
    restored.restore("r", entry)
    restored.restore("gone", (1.0, 1.0, T0))
    restored.restore("gone", None)  # a tombstone later in the log
    initial, distance = restored.recall(["r", "gone"])
    assert initial[0] == 17.25 and distance[0] == 4.5 and np.isnan(initial[1])
    assert restored.take_changes() == {}  # restoring is not a change


def test_a_partition_that_leaves_drops_its_rides_without_tombstones():
    s = store()
    s.memory.remember(["a", "b"], np.ones(2), np.ones(2), at=[T0, T0])
    s.records([Ev("a"), Ev("b")], [msg("a", 1), msg("b", 2)])
    s.drop({1})
    assert len(s.memory) == 1 and s.partition_of == {"b": 2} and s.memory.take_changes() == {}


def test_the_duration_service_records_requests_and_forgets_completions():
    from bench.loops import ride_requests
    from shared.contract.codec import encode_dict, read_event
    from shared.ml.artifacts import load_model

    events = [read_event(encode_dict(e)) for e in ride_requests(3, seed=1)]
    memory = RideMemory(track=True)
    models = {n: load_model(n) for n in DURATION.model_names}
    score_groups(DURATION, models, memory, by_event_type(events), datetime.now(timezone.utc))
    changes = memory.take_changes()
    assert set(changes) == {e.ride_id for e in events}
    assert all(entry[2] == e.event_time.timestamp() for e, entry in zip(events, changes.values()))
