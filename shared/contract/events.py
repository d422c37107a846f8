"""The wire contract, version 1: ride events and predictions as strict pydantic models.

Outside clients are built against these names: new optional fields may be added, none renamed or
removed without a new ``schema_version``. Unknown extra fields are ignored, so a newer producer
that adds an optional field does not break an older consumer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from hashlib import sha1
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, GetPydanticSchema, TypeAdapter
from pydantic_core import core_schema

from shared.contract.topics import Service

SCHEMA_VERSION = 1
Variant = Literal["stable", "candidate", "shadow", "a", "b"]
VARIANTS: tuple[str, ...] = ("stable", "candidate", "shadow", "a", "b")


UtcTime = Annotated[datetime, GetPydanticSchema(lambda _t, _h: core_schema.datetime_schema(tz_constraint=0))]
"""An RFC 3339 time in UTC: naive times and other offsets are rejected — by pydantic-core itself
(its ``tz_constraint``), not a Python validator called per event."""
Zone = Annotated[int, Field(ge=1, le=265, description="TLC taxi zone LocationID")]
Miles = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Minutes = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Usd = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PassengerCount = Annotated[int, Field(ge=0, le=9)]
PaymentType = Annotated[int, Field(ge=1, le=6, description="TLC payment type code")]
Id = Annotated[str, Field(min_length=1, max_length=128)]


def _wire_fields_required(schema: dict[str, Any]) -> None:
    """In the exported JSON Schema, the fields every message carries are required, even where
    the Python model fills them in by default."""
    wire = [f for f in ("schema_version", "event_type") if f in schema.get("properties", {})]
    schema["required"] = [*wire, *(f for f in schema.get("required", []) if f not in wire)]


class WireModel(BaseModel):
    """Strict: no type coercion (``"3"`` is not a zone), no NaN or infinity, immutable."""

    model_config = ConfigDict(
        strict=True, frozen=True, extra="ignore", allow_inf_nan=False,
        json_schema_extra=_wire_fields_required,
    )


class RideEventBase(WireModel):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    ride_id: Id
    event_time: UtcTime
    rider_id: Id | None = Field(default=None, description="who rides; the backend stamps it on all of a "
                                "ride's events, so A/B cohorts stick to a rider at any stage of the ride")


class RideRequested(RideEventBase):
    event_type: Literal["ride_requested"] = "ride_requested"
    pickup_zone: Zone
    dropoff_zone: Zone
    trip_distance_mi: Miles = Field(description="planned route distance")
    passenger_count: PassengerCount
    payment_type: PaymentType
    service: Literal["yellow", "green"]
    initial_duration_min: Minutes | None = Field(
        default=None, description="the backend's request-time estimate; may be absent or null"
    )


class RideStarted(RideEventBase):
    event_type: Literal["ride_started"] = "ride_started"


class RideProgress(RideEventBase):
    event_type: Literal["ride_progress"] = "ride_progress"
    elapsed_min: Minutes
    distance_done_mi: Miles
    distance_left_mi: Miles


class RideCompleted(RideEventBase):
    event_type: Literal["ride_completed"] = "ride_completed"
    duration_min: Minutes
    fare_amount: Usd
    tip_amount: Usd
    total_amount: Usd


RideEvent = Annotated[
    Union[RideRequested, RideStarted, RideProgress, RideCompleted],
    Field(discriminator="event_type"),
]
EVENT_TYPES: tuple[str, ...] = ("ride_requested", "ride_started", "ride_progress", "ride_completed")
ride_event_adapter: TypeAdapter[RideEvent] = TypeAdapter(RideEvent)


class Prediction(WireModel):
    """What a service publishes on ``rides.predictions.<service>``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    prediction_id: Id = Field(description="deterministic from service, model version and event_id")
    ride_id: Id
    event_id: Id = Field(description="the source event")
    service: Service
    model_version: Annotated[str, Field(min_length=1)]
    value: Annotated[float, Field(allow_inf_nan=False)]
    unit: Literal["min", "usd"]
    event_time: UtcTime = Field(description="the source event's time")
    scored_at: UtcTime
    remaining_min: Minutes | None = Field(
        default=None, description="duration answers to ride_progress: minutes left"
    )
    initial: bool | None = Field(
        default=None, description="true on the backend's request-time duration estimate"
    )
    variant: Variant | None = Field(
        default=None, description="while a deployment plan is in force: which side of it made this prediction"
    )


UNITS: dict[Service, Literal["min", "usd"]] = {"duration": "min", "tip": "usd", "cost": "usd"}
_PREDICTION_NAMESPACE = uuid.UUID("6f1c1f8e-6b0a-4c38-9a43-2f7d5f1a9d10")


_NAMESPACE_BYTES = _PREDICTION_NAMESPACE.bytes
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# where the 32 hex digits of a UUID go among its 36 characters (the dashes are at 8, 13, 18, 23)
_HEX_SLOTS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def prediction_id_bytes(service: str, model_version: str, event_ids: Sequence[str]) -> list[bytes]:
    """The same (service, model version, event) always gives the same id, so a replay or a
    redelivery after a crash writes the same ids and downstream can de-duplicate.

    Each is ``uuid.uuid5(namespace, f"{service}\\x1f{model_version}\\x1f{event_id}")`` as ASCII bytes,
    computed for a whole batch (this is the hot path): one SHA-1 per event with the shared prefix
    hashed once, then the version and variant bits and the hex digits set with numpy (a small
    batch's one id at a time)."""
    n = len(event_ids)
    if n == 0:
        return []
    prefix = sha1(_NAMESPACE_BYTES + f"{service}\x1f{model_version}\x1f".encode())
    if n < _FEW_IDS:
        return [_id_text(prefix, event_id) for event_id in event_ids]
    digests = []
    for event_id in event_ids:
        h = prefix.copy()
        h.update(event_id.encode())
        digests.append(h.digest())
    raw = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(n, 20)[:, :16].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50  # version 5
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant (10xx)
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _HEX_SLOTS[0::2]] = _HEX[raw >> 4]
    text[:, _HEX_SLOTS[1::2]] = _HEX[raw & 0x0F]
    blob = text.tobytes()
    return [blob[i:i + 36] for i in range(0, 36 * n, 36)]


# below this many ids, one at a time is faster than numpy's fixed cost (~28 µs a batch; measured)
_FEW_IDS = 24


def _id_text(prefix: Any, event_id: str) -> bytes:
    """One id the way :func:`prediction_id_bytes` computes a batch's, for small batches."""
    h = prefix.copy()
    h.update(event_id.encode())
    raw = bytearray(h.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant (10xx)
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}".encode()


def prediction_ids(service: str, model_version: str, event_ids: Sequence[str]) -> list[str]:
    """:func:`prediction_id_bytes` as strings."""
    return [b.decode() for b in prediction_id_bytes(service, model_version, event_ids)]


def prediction_id(service: str, model_version: str, event_id: str) -> str:
    return prediction_ids(service, model_version, [event_id])[0]


def prediction_record(service: Service, model_version: str, ride_id: str, event_id: str, event_time: Any,
                      value: float, scored_at: Any, *, id_service: str | None = None,
                      remaining_min: float | None = None, initial: bool | None = None,
                      prediction_id_: str | None = None, variant: str | None = None) -> dict[str, Any]:
    """A prediction in contract shape, as a plain dict ready for :func:`shared.contract.codec.encode_dict`
    (the hot paths skip building models). Optional fields appear only when given; ``id_service``
    keeps the backend's initial estimates from sharing ids with the duration service's;
    ``prediction_id_`` passes an id already computed with :func:`prediction_ids`."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "prediction_id": prediction_id_ or prediction_id(id_service or service, model_version, event_id),
        "ride_id": ride_id, "event_id": event_id, "service": service, "model_version": model_version,
        "value": value, "unit": UNITS[service], "event_time": event_time, "scored_at": scored_at,
    }
    if remaining_min is not None:
        record["remaining_min"] = remaining_min
    if initial is not None:
        record["initial"] = initial
    if variant is not None:
        record["variant"] = variant
    return record
