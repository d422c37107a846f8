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


@dataclass(slots=True)
class Landed:
    """One prediction as it landed on its topic: the bytes as published, and the SSE id a client
    that has seen it resumes from. Records are parsed when they land and not kept parsed: a
    parsed dict costs several times its bytes, and a replica holds many."""

    service: str
    offset: int
    data: bytes  # the message value, as published
    event_id: bytes  # the cursor after it: the SSE ``id``

    @property
    def frame(self) -> bytes:
        return b"id: %b\nevent: prediction\ndata: %b\n\n" % (self.event_id, self.data)


@dataclass(slots=True)
class RideEntry:
    """A ride's predictions held here: the last ``per_ride`` in order, and the latest per kind."""

    landed: deque[Landed]
    cursor: Cursor = field(default_factory=lambda: dict(NO_CURSOR))
    latest: dict[str, bytes] = field(default_factory=dict)  # initial, duration, tip, cost → bytes


@dataclass
class Applied:
    """What applying one state record did."""

    applied: bool
    reason: str = ""


class RideTable:
    """Ride states by id (``max_rides``, least recently changed forgotten first; a few hundred
    bytes each), the predictions of the ``max_followed`` rides most recently predicted (the last
    ``per_ride`` of each, and the latest per service), idempotency answers (``max_keys``, oldest
    forgotten first)."""

    def __init__(self, max_rides: int = 200_000, per_ride: int = 32, max_keys: int = 100_000,
                 max_followed: int = 20_000):
        self.max_rides, self.per_ride, self.max_keys, self.max_followed = max_rides, per_ride, max_keys, max_followed
        self.states: OrderedDict[str, bytes] = OrderedDict()
        self.rides: OrderedDict[str, RideEntry] = OrderedDict()  # the predictions held
        self.keys: OrderedDict[str, bytes] = OrderedDict()
        self.versions: dict[str, dict[str, str]] = {s: {} for s in SERVICES}  # service → version → last scored_at
        self.rejected = 0  # records that lost a race (or came out of order)

    # --- state -------------------------------------------------------------------------------
    def ride(self, ride_id: str) -> dict[str, Any] | None:
        value = self.states.get(ride_id)
        return orjson.loads(value) if value is not None else None

    def idempotent(self, key: str) -> dict[str, Any] | None:
        value = self.keys.get(key)
        return orjson.loads(value) if value is not None else None

    def apply_state(self, key: str, value: bytes | None) -> Applied:
        """One record of ``rides.backend.state``, in offset order."""
        if value is None:  # a tombstone
            if key.startswith(IDEMPOTENCY_PREFIX):
                self.keys.pop(key[len(IDEMPOTENCY_PREFIX):], None)
            else:
                self.states.pop(key, None)
            return Applied(True)
        record = orjson.loads(value)
        if record.get("kind") == "idempotency":
            if record["key"] in self.keys:
                return self._reject("key taken")
            self.keys[record["key"]] = value
            while len(self.keys) > self.max_keys:
                self.keys.popitem(last=False)
            return Applied(True)
        ride_id = record["ride_id"]
        now = self.ride(ride_id)
        if now is not None:
            if record["seq"] == now["seq"] and record["writer"] == now["writer"]:
                return Applied(True)  # the winner's record written again after a race
            if record["seq"] != now["seq"] + 1:
                return self._reject(f"seq {record['seq']} after {now['seq']}")
            if record["stage"] not in NEXT_STAGES[now["stage"]]:
                return self._reject(f"{record['stage']} after {now['stage']}")
        # an unknown ride takes any record: compaction may have left only its latest
        self.states[ride_id] = value
        self.states.move_to_end(ride_id)
        while len(self.states) > self.max_rides:
            self.states.popitem(last=False)
        return Applied(True)

    def _reject(self, reason: str) -> Applied:
        self.rejected += 1
        return Applied(False, reason)

    # --- predictions ---------------------------------------------------------------------------
    def _entry(self, ride_id: str) -> RideEntry:
        entry = self.rides.get(ride_id)
        if entry is None:
            entry = self.rides[ride_id] = RideEntry(deque(maxlen=self.per_ride))
            while len(self.rides) > self.max_followed:
                self.rides.popitem(last=False)
        else:
            self.rides.move_to_end(ride_id)
        return entry

    def add_prediction(self, service: str, offset: int, data: bytes) -> tuple[str, Landed] | None:
        """A prediction read at ``offset`` of its service's topic; None if it is not one (a bad
        message is the fleet's business, not the riders') or is held already."""
        try:
            record = orjson.loads(data)
            ride_id = record["ride_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not isinstance(ride_id, str):
            return None
        entry = self._entry(ride_id)
        if offset <= entry.cursor.get(service, -1):
            return None  # already held (read again after a restart of the follower)
        entry.cursor[service] = offset
        landed = Landed(service, offset, data, format_cursor(entry.cursor).encode())
        entry.landed.append(landed)
        entry.latest["initial" if record.get("initial") else service] = data
        version = record.get("model_version")
        if isinstance(version, str):
            self.versions.setdefault(service, {})[version] = str(record.get("scored_at") or "")
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
        for name, data in (entry.latest.items() if entry else ()):
            record = orjson.loads(data)
            out[name] = {k: record.get(k) for k in ("value", "unit", "model_version", "scored_at", "event_id",
                                                    "remaining_min", "variant") if record.get(k) is not None}
        return out
