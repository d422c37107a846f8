"""A stateful service's per-ride state on its compacted changelog,
``ridestream-SERVICE-state-changelog`` (key = ride_id, partitioned like ``rides.events``: a ride's
state sits in the partition of its events). A tombstone (null value) forgets a ride: on its
completion, or when it expired unfinished."""

from __future__ import annotations

from typing import Literal

from shared.contract.events import SCHEMA_VERSION, Id, Miles, Minutes, UtcTime, WireModel


class RideState(WireModel):
    """What the duration service remembers of a ride in flight: its initial estimate and planned
    distance, which its answers to ``ride_started`` and ``ride_progress`` use."""

    schema_version: Literal[1] = SCHEMA_VERSION
    ride_id: Id
    initial_duration_min: Minutes
    trip_distance_mi: Miles
    requested_at: UtcTime  # the request's event time: the state expires a TTL after it
