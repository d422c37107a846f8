"""A replica's view of the rides: what ``rides.backend.state`` says about each (stage, request,
idempotency answers) and the predictions of each so far, all bounded.

Pure and single-threaded: the replica's event loop applies what the Kafka follower reads, in
offset order, so every replica reaching the same offsets holds the same stages and winners.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.contract.backend_state import IDEMPOTENCY_PREFIX, NEXT_STAGES
from shared.contract.topics import SERVICES

Cursor = dict[str, int]  # service → offset of the last prediction of the ride that was sent
NO_CURSOR: Cursor = dict.fromkeys(SERVICES, -1)


def format_cursor(cursor: Cursor) -> str:
    """An SSE event id: the offsets, per service, of the ride's predictions sent so far. Offsets
    are the same on every replica (a ride's predictions of a service share a partition), so a
    client can resume on any replica."""
    return ",".join(str(cursor.get(s, -1)) for s in SERVICES)


def parse_cursor(text: str | None) -> Cursor | None:
    """A ``Last-Event-ID`` back into a cursor; None if it is not one of ours."""
    if not text:
        return None
    parts = text.strip().split(",")
    if len(parts) != len(SERVICES):
        return None
    try:
        return {s: int(p) for s, p in zip(SERVICES, parts)}
    except ValueError:
        return None


@dataclass
class Landed:
    """One prediction as it landed on its topic, with the SSE frame every client gets."""

    service: str
    offset: int
    data: bytes  # the message value, as published
    record: dict[str, Any]
    frame: bytes  # "id: …\nevent: prediction\ndata: …\n\n"


@dataclass
class RideEntry:
    state: dict[str, Any] | None = None  # the applied RideRecord, as a dict
    landed: deque[Landed] = field(default_factory=deque)
    cursor: Cursor = field(default_factory=lambda: dict(NO_CURSOR))


@dataclass
class Applied:
    """What applying one state record did."""

    applied: bool
    reason: str = ""


class RideTable:
    """Rides by id (least recently changed forgotten first beyond ``max_rides``), the last
    ``per_ride`` predictions of each, idempotency answers (beyond ``max_keys``, oldest first)."""

    def __init__(self, max_rides: int = 100_000, per_ride: int = 64, max_keys: int = 100_000):
        self.max_rides, self.per_ride, self.max_keys = max_rides, per_ride, max_keys
        self.rides: OrderedDict[str, RideEntry] = OrderedDict()
        self.keys: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.versions: dict[str, dict[str, float]] = {s: {} for s in SERVICES}  # service → version → last seen
        self.rejected = 0  # records that lost a race (or came out of order)

    # --- state -------------------------------------------------------------------------------
    def _entry(self, ride_id: str) -> RideEntry:
        entry = self.rides.get(ride_id)
        if entry is None:
            entry = self.rides[ride_id] = RideEntry()
            while len(self.rides) > self.max_rides:
                self.rides.popitem(last=False)
        else:
            self.rides.move_to_end(ride_id)
        return entry

    def ride(self, ride_id: str) -> dict[str, Any] | None:
        entry = self.rides.get(ride_id)
        return entry.state if entry else None

    def idempotent(self, key: str) -> dict[str, Any] | None:
        return self.keys.get(key)

    def apply_state(self, key: str, value: bytes | None) -> Applied:
        """One record of ``rides.backend.state``, in offset order."""
        if value is None:  # a tombstone
            if key.startswith(IDEMPOTENCY_PREFIX):
                self.keys.pop(key[len(IDEMPOTENCY_PREFIX):], None)
            else:
                self.rides.pop(key, None)
            return Applied(True)
        record = orjson.loads(value)
        if record.get("kind") == "idempotency":
            if record["key"] in self.keys:
                return self._reject("key taken")
            self.keys[record["key"]] = record
            while len(self.keys) > self.max_keys:
                self.keys.popitem(last=False)
            return Applied(True)
        entry = self._entry(record["ride_id"])
        now = entry.state
        if now is not None:
            if record["seq"] == now["seq"] and record["writer"] == now["writer"]:
                return Applied(True)  # the winner's record written again after a race
            if record["seq"] != now["seq"] + 1:
                return self._reject(f"seq {record['seq']} after {now['seq']}")
            if record["stage"] not in NEXT_STAGES[now["stage"]]:
                return self._reject(f"{record['stage']} after {now['stage']}")
        # an unknown ride takes any record: compaction may have left only its latest
        entry.state = record
        return Applied(True)

    def _reject(self, reason: str) -> Applied:
        self.rejected += 1
        return Applied(False, reason)

    # --- predictions ---------------------------------------------------------------------------
    def add_prediction(self, service: str, offset: int, data: bytes) -> tuple[str, Landed] | None:
        """A prediction read at ``offset`` of its service's topic; None if it is not one (a bad
        message is the fleet's business, not the riders')."""
        try:
            record = orjson.loads(data)
            ride_id = record["ride_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        entry = self._entry(ride_id)
        if offset <= entry.cursor.get(service, -1):
            return None  # already held (read again after a restart of the follower)
        entry.cursor[service] = offset
        frame = b"id: %b\nevent: prediction\ndata: %b\n\n" % (format_cursor(entry.cursor).encode(), data)
        landed = Landed(service, offset, data, record, frame)
        entry.landed.append(landed)
        if len(entry.landed) > self.per_ride:
            entry.landed.popleft()
        version = record.get("model_version")
        if isinstance(version, str):
            self.versions.setdefault(service, {})[version] = record.get("scored_at") or ""
        return ride_id, landed

    def since(self, ride_id: str, cursor: Cursor | None) -> list[Landed]:
        """The ride's predictions held here that ``cursor`` has not seen (all of them for None)."""
        entry = self.rides.get(ride_id)
        if entry is None:
            return []
        cursor = cursor or NO_CURSOR
        return [x for x in entry.landed if x.offset > cursor.get(x.service, -1)]

    def latest(self, ride_id: str) -> dict[str, Any]:
        """The ride's latest prediction per service (the backend's initial estimate apart)."""
        entry = self.rides.get(ride_id)
        out: dict[str, Any] = {}
        for x in entry.landed if entry else ():
            name = "initial" if x.record.get("initial") else x.service
            out[name] = {k: x.record.get(k) for k in ("value", "unit", "model_version", "scored_at", "event_id",
                                                      "remaining_min", "variant") if x.record.get(k) is not None}
        return out
