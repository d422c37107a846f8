"""A service's per-ride memory kept on a compacted changelog, so it moves with its partition
(Kafka Streams' and Quix Streams' model).

Every change the scoring makes to the memory (:class:`consumers.scoring.RideMemory`) becomes a
record on ``ridestream-SERVICE-state-changelog`` — key = ride_id, in the partition of the ride's
events; a tombstone when the ride completes or expires — produced with the batch's output: in
its transaction (exactly-once), or before its offsets are committed (at-least-once). When a
partition is assigned, its changelog partition is read to its end into the memory before any of
its events is scored; when it leaves, its rides are dropped from the memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import orjson
from confluent_kafka import Message

from consumers.scoring import Entry, RideMemory
from shared.kafka.reading import read_to_end
from shared.kafka.settings import Settings

log = logging.getLogger("ridestream.state")

Record = tuple[int, bytes, bytes | None]  # partition, key, value (None: a tombstone)


def encode_state(ride_id: str, entry: Entry) -> bytes:
    """A :class:`shared.contract.state.RideState` as wire bytes (built directly: one per request)."""
    initial, distance, at = entry
    return orjson.dumps({"schema_version": 1, "ride_id": ride_id, "initial_duration_min": initial,
                         "trip_distance_mi": distance,
                         "requested_at": datetime.fromtimestamp(at, timezone.utc)}, option=orjson.OPT_UTC_Z)


def decode_state(value: bytes) -> Entry:
    d = orjson.loads(value)
    at = datetime.fromisoformat(d["requested_at"].replace("Z", "+00:00")).timestamp()
    return float(d["initial_duration_min"]), float(d["trip_distance_mi"]), at


class StateStore:
    """The memory of one service process and the changelog behind it: which partition each
    remembered ride belongs to, the records a batch's changes make, restoring and dropping."""

    def __init__(self, settings: Settings, memory: RideMemory, topic: str):
        self.settings = settings
        self.memory = memory
        self.topic = topic
        self.partition_of: dict[str, int] = {}
        self.restored = 0  # changelog records read at assignments

    def records(self, events: Sequence[Any], msgs: Sequence[Message]) -> list[Record]:
        """The changelog records of the changes scoring just made (in the partitions of the rides)."""
        changes = self.memory.take_changes()
        if not changes:
            return []
        where = {e.ride_id: m.partition() for e, m in zip(events, msgs) if e.ride_id in changes}
        out: list[Record] = []
        for ride_id, entry in changes.items():
            partition = where.get(ride_id, self.partition_of.get(ride_id))
            if partition is None:  # an eviction of a ride whose partition is unknown: cannot happen
                continue
            if entry is None:
                self.partition_of.pop(ride_id, None)
                out.append((partition, ride_id.encode(), None))
            else:
                self.partition_of[ride_id] = partition
                out.append((partition, ride_id.encode(), encode_state(ride_id, entry)))
        return out

    def restore(self, partitions: Iterable[int]) -> int:
        """Read these changelog partitions to their end into the memory; how many records."""
        partitions = sorted(partitions)
        if not partitions:
            return 0
        count = 0
        for msg in read_to_end(self.settings, self.topic, partitions=partitions, timeout=300,
                               group=f"{self.settings.namespace}ridestream-state-restore"):
            key = msg.key()
            if key is None:
                continue
            ride_id, value = key.decode("utf-8", "replace"), msg.value()
            try:
                entry = None if value is None else decode_state(value)
            except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                log.warning("skipping an unreadable state record at %s/%d@%d", self.topic, msg.partition(),
                            msg.offset())
                continue
            self.memory.restore(ride_id, entry)
            if entry is None:
                self.partition_of.pop(ride_id, None)
            else:
                self.partition_of[ride_id] = msg.partition()
            count += 1
        self.restored += count
        log.info("restored %d state records of partitions %s from %s (%d rides held)", count, partitions,
                 self.topic, len(self.memory))
        return count

    def drop(self, partitions: set[int]) -> None:
        """The rides of partitions that left this process (their new owner restores them)."""
        gone = [r for r, p in self.partition_of.items() if p in partitions]
        self.memory.drop(gone)
        for ride_id in gone:
            del self.partition_of[ride_id]
