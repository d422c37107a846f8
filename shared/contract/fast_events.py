"""The ride events again, as msgspec structs: the services' fast path for decoding.

The contract is the pydantic models in :mod:`shared.contract.events`; these mirror them field for field
(a test holds them together) so that msgspec — several times faster than pydantic-core at
turning bytes into validated objects — can do the common case. The rule that keeps the contract
exact: what msgspec accepts, pydantic accepts too, with the same values; whatever msgspec refuses
goes to pydantic, which accepts it (it is more lenient in a few corners, e.g. ``"schema_version":
1.0``) or says why not, for the DLQ (:func:`shared.contract.codec.read_event`).

Where they would differ, this side is stricter: a time must carry seconds, numbers must not be
floats where ints are due, ``schema_version`` must be there. One known difference in value: a time with more than six fractional
digits is rounded to the microsecond here and truncated by pydantic.
"""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Annotated, ClassVar, Literal, Union

import msgspec
from msgspec import Meta, Struct

Zone = Annotated[int, Meta(ge=1, le=265)]
NonNegative = Annotated[float, Meta(ge=0)]  # finite: msgspec refuses 1e999 ("out of range"), as pydantic does
Id = Annotated[str, Meta(min_length=1, max_length=128)]
AwareTime = Annotated[datetime, Meta(tz=True)]  # UTC is checked by the caller: msgspec takes any offset


class _Event(Struct, frozen=True, kw_only=True, tag_field="event_type"):
    event_id: Id
    ride_id: Id
    event_time: AwareTime
    # required here though the contract defaults it: the batch's duplicate-key check counts one key
    # for it in every event, so an event without it must not take this path (pydantic decides it)
    schema_version: Literal[1]
    rider_id: Id | None = None


class RideRequested(_Event, tag="ride_requested"):
    event_type: ClassVar[str] = "ride_requested"  # the tag, readable as on the pydantic models
    pickup_zone: Zone
    dropoff_zone: Zone
    trip_distance_mi: NonNegative
    passenger_count: Annotated[int, Meta(ge=0, le=9)]
    payment_type: Annotated[int, Meta(ge=1, le=6)]
    service: Literal["yellow", "green"]
    initial_duration_min: NonNegative | None = None


class RideStarted(_Event, tag="ride_started"):
    event_type: ClassVar[str] = "ride_started"  # the tag, readable as on the pydantic models


class RideProgress(_Event, tag="ride_progress"):
    event_type: ClassVar[str] = "ride_progress"  # the tag, readable as on the pydantic models
    elapsed_min: NonNegative
    distance_done_mi: NonNegative
    distance_left_mi: NonNegative


class RideCompleted(_Event, tag="ride_completed"):
    event_type: ClassVar[str] = "ride_completed"  # the tag, readable as on the pydantic models
    duration_min: NonNegative
    fare_amount: NonNegative
    tip_amount: NonNegative
    total_amount: NonNegative


FastEvent = Union[RideRequested, RideStarted, RideProgress, RideCompleted]
FAST_EVENTS: tuple[type[_Event], ...] = typing.get_args(FastEvent)
decode = msgspec.json.Decoder(FastEvent).decode
# ValueError: e.g. invalid UTF-8 inside a string; RecursionError: nesting deeper than msgspec follows
# (thousands of levels: a hostile message, which the contract's validator then refuses as bad JSON)
Refused = (msgspec.MsgspecError, ValueError, RecursionError)
