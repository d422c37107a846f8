"""Bytes ⇄ contract models. Encoding uses orjson; decoding validates straight from the bytes with
pydantic-core's own JSON parser (one pass, no intermediate dict), which is also what makes strict
RFC 3339 time parsing possible.

A value that is not a valid contract event raises :class:`InvalidMessage`, whose ``error_type``
and one-line ``message`` are what the DLQ headers carry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timezone
from itertools import repeat
from operator import attrgetter, is_not
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from shared.contract import fast_events
from shared.contract.events import EVENT_TYPES, RideEvent, ride_event_adapter

_ORJSON_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_MAX_MESSAGE_CHARS = 300
_validate_json = ride_event_adapter.validator.validate_json  # the core validator: no per-call wrapper


class InvalidMessage(ValueError):
    """A message value that is not a contract event.

    ``error_type`` is one of: ``empty``, ``json``, ``unknown_event_type``, ``schema``.
    """

    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


def encode(model: BaseModel) -> bytes:
    """A contract model as compact UTF-8 JSON; optional fields that are None are left out."""
    return orjson.dumps(model.model_dump(exclude_none=True), option=_ORJSON_OPTS)


def encode_dict(payload: dict[str, Any]) -> bytes:
    """A plain dict (already in contract shape) as UTF-8 JSON; the hot paths build dicts directly."""
    return orjson.dumps(payload, option=_ORJSON_OPTS)


def decode_event(value: bytes | None) -> RideEvent:
    """Validate one ``rides.events`` value. Raises :class:`InvalidMessage` with the reason."""
    if not value:
        raise InvalidMessage("empty", "the message value is empty")
    try:
        event = _validate_json(value)
    except ValidationError as exc:
        raise _classify(exc) from None
    _refuse_duplicate_keys(value)
    return event


def _refuse_duplicate_keys(value: bytes) -> None:
    """A JSON object naming a field twice is bad input: parsers disagree on which value wins (ours
    take the last), so a reader and a writer could see different rides (RFC 8259 § 4)."""
    seen: set[str] = set()

    def pairs(items: list[tuple[str, Any]]) -> None:
        for name, _ in items:
            if name in seen:
                raise InvalidMessage("json", f"not valid JSON: the key {name!r} appears twice")
            seen.add(name)
        seen.clear()

    try:
        json.loads(value, object_pairs_hook=pairs)
    except InvalidMessage:
        raise
    except (ValueError, RecursionError):  # Python's parser is stricter in corners the validator accepted
        pass


# keys each fast event has for sure (the tag and schema_version included: the fast path requires it);
# optional ones are counted when set. The count must never exceed the keys really there: a valid event
# with one key fewer than counted would hide another's duplicate key in the same batch (schema_version
# once had a default here, and the hostile-input test found such a pair). An explicit null only makes
# the colons more: the exact check decides
_OPTIONAL = ("rider_id", "initial_duration_min")
_KEYS = {cls: len(cls.__struct_fields__) + 1 - sum(name in cls.__struct_fields__ for name in _OPTIONAL)
         for cls in fast_events.FAST_EVENTS}


def _no_duplicate_keys(values: Sequence[bytes], events: Sequence[fast_events.FastEvent]) -> bool:
    """Whether no value names a key twice, cheaply for a whole batch. A value holds one ``:`` per
    key, spaced or not, plus those inside its strings — at least two in ``event_time``
    (``HH:MM:SS``, seconds are required). So when the batch holds exactly as many colons as its
    events have keys plus two each, and no escape could hide a colon, no event names a key twice.
    Anything else (an offset instead of Z, an unknown key, an explicit null, a colon in an id)
    only makes the count larger: those batches are checked message by message. Counted in C
    (~0.3 µs an event), with no Python step per event."""
    blob = b"\x00".join(values)
    if b"\\" in blob:
        return False
    expected = sum(map(_KEYS.__getitem__, map(type, events))) + 2 * len(events)
    expected += sum(map(is_not, map(_rider, events), repeat(None)))
    expected += sum(map(is_not, map(_initial, filter(_is_request, events)), repeat(None)))
    return blob.count(b":") == expected


_rider = attrgetter("rider_id")
_initial = attrgetter("initial_duration_min")
_is_request = fast_events.RideRequested.__instancecheck__


def read_event(value: bytes | None) -> RideEvent | fast_events.FastEvent:
    """What the services decode with: :func:`decode_event`'s verdict, faster.

    msgspec tries first (:mod:`shared.contract.fast_events`, several times faster); anything it refuses,
    and any time not in UTC, goes to the contract's own validator, which accepts it or raises
    :class:`InvalidMessage` with the same reason :func:`decode_event` gives. The event is then a
    msgspec struct or a pydantic model with the same fields; read them as attributes."""
    if value:
        try:
            event = fast_events.decode(value)
            if event.event_time.tzinfo is timezone.utc and _no_duplicate_keys([value], [event]):
                return event  # (msgspec's own UTC object for Z, ±00:00)
        except fast_events.Refused:
            pass
    return decode_event(value)


def read_events(values: Sequence[bytes | None]) -> list[fast_events.FastEvent] | None:
    """:func:`read_event` for a whole batch in one pass, when msgspec takes every value and every
    time is in UTC (a live batch, nearly always); None if any value needs a closer look — then
    read them one by one for each one's verdict. (One pass: ~0.8 µs an event less than a loop
    that calls :func:`read_event` inside ``try``.)"""
    try:
        events = list(map(fast_events.decode, values))
    except (*fast_events.Refused, TypeError):  # TypeError: a None value (a tombstone)
        return None
    utc = timezone.utc
    if any(event.event_time.tzinfo is not utc for event in events) or not _no_duplicate_keys(values, events):
        return None
    return events


def _classify(exc: ValidationError) -> InvalidMessage:
    errors = exc.errors(include_url=False, include_input=False)
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds:
        return InvalidMessage("json", "not valid JSON: " + errors[0]["msg"].removeprefix("Invalid JSON: "))
    if "union_tag_invalid" in kinds:
        return InvalidMessage("unknown_event_type", f"event_type must be one of {', '.join(EVENT_TYPES)}")
    if "union_tag_not_found" in kinds:
        return InvalidMessage("schema", "event_type is missing")
    if kinds & {"dict_type", "model_attributes_type", "model_type"}:
        return InvalidMessage("schema", "the value must be a JSON object")
    return InvalidMessage("schema", describe_errors(errors))


_FRIENDLIER = {
    "timezone_offset": "must be in UTC (end in Z or +00:00)",
    "timezone_aware": "must carry a time zone, in UTC (end in Z or +00:00)",
}


def describe_errors(errors: list[Any]) -> str:
    """Pydantic errors as one short line: ``field: problem; field: problem``."""
    parts = []
    for e in errors:
        # the first element of loc is the union member's tag (e.g. "ride_requested"); keep the field
        loc = [str(p) for p in e["loc"] if str(p) not in EVENT_TYPES]
        msg = _FRIENDLIER.get(e["type"], e["msg"])
        parts.append(f"{'.'.join(loc) or 'value'}: {msg}")
    line = "; ".join(parts)
    return line if len(line) <= _MAX_MESSAGE_CHARS else line[: _MAX_MESSAGE_CHARS - 1] + "…"
