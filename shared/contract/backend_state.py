"""The web backend's shared state on ``rides.backend.state`` (compacted, partitioned like
``rides.events``): every replica of ``ridestream serve`` reads the whole topic and applies the
records in offset order with the same rules, so any replica can answer for any ride.

Two kinds of record, told apart by ``kind`` (and by the key):

- ``ride`` (key = ``ride_id``): where a ride stands. ``seq`` counts its changes; a record is
  applied only if its ``seq`` is the ride's next one and its ``stage`` may follow the ride's, so
  of two replicas racing to change the same ride the one whose record the log holds first wins;
  the loser writes the winner's record again, so compaction keeps the winner.
- ``idempotency`` (key = ``idempotency/`` + the client's ``Idempotency-Key``): the first record
  of a key wins; it holds the answer every retry gets.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from shared.contract.events import SCHEMA_VERSION, Id, UtcTime, WireModel

Stage = Literal["requested", "started", "in_progress", "completed"]
STAGES: tuple[str, ...] = ("requested", "started", "in_progress", "completed")
# stage → the stages a ride may move to from it (progress may repeat)
NEXT_STAGES: dict[str, tuple[str, ...]] = {
    "requested": ("started",), "started": ("in_progress", "completed"),
    "in_progress": ("in_progress", "completed"), "completed": (),
}
IDEMPOTENCY_PREFIX = "idempotency/"


class RideRecord(WireModel):
    """A ride's state after its ``seq``-th change."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["ride"] = "ride"
    ride_id: Id
    seq: Annotated[int, Field(ge=0, description="0 for the request, +1 for every driver event")]
    stage: Stage
    writer: Id = Field(description="the replica's token for this write, to tell which racer won")
    updated_at: UtcTime
    request: dict[str, Any] = Field(description="the ride_requested event as published")
    last_event_type: str | None = Field(default=None, description="the event the change published")
    simulated: bool | None = Field(default=None, description="the backend's simulator plays the driver")


class IdempotencyRecord(WireModel):
    """The answer to a POST /v1/rides with an ``Idempotency-Key``: every retry gets it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["idempotency"] = "idempotency"
    key: Annotated[str, Field(min_length=1, max_length=255)]
    request_hash: str = Field(description="SHA-256 of the request body: a reuse with another body is refused")
    ride_id: Id
    response: dict[str, Any] = Field(description="the 201 body the first request got")
    writer: Id
    created_at: UtcTime


BackendStateRecord = Annotated[RideRecord | IdempotencyRecord, Field(discriminator="kind")]
