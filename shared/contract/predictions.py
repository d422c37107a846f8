"""A batch's predictions kept as columns, the way the services produce them.

The hot path needs wire bytes, not dicts: :meth:`PredictionColumns.encoded` builds each message
from columns that orjson encodes in one call each (strings escaped, floats and times formatted
exactly as ``orjson.dumps`` of the record would), so a prediction costs one bytes-format instead
of a dict, a per-record ``dumps`` and a per-record UUID. The bytes are identical to
``shared.contract.codec.encode_dict(record)`` — a test holds them to that. Contract dicts are built only
when someone asks (replay to a table, evaluation, tests).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import orjson

from shared.contract.events import SCHEMA_VERSION, UNITS, prediction_id_bytes, prediction_record
from shared.contract.topics import Service

_ORJSON_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
def _json_items(values: Sequence[Any]) -> list[bytes]:
    """Each value as orjson writes it inside a list, without the quotes of strings.

    Splitting orjson's encoding of the whole list is exact: a string's own quotes and commas are
    escaped (``\\"``), so ``","`` (or ``,`` between numbers and ``null``) occurs only between items."""
    if not values:
        return []
    blob = orjson.dumps(values, option=_ORJSON_OPTS)
    if isinstance(values[0], str | datetime):
        return blob[2:-2].split(b'","')
    return blob[1:-1].split(b",")


def _literal(value: Any) -> bytes:
    """A constant of every record, JSON-encoded and safe inside a %-format."""
    return orjson.dumps(value, option=_ORJSON_OPTS).replace(b"%", b"%%")


@dataclass
class PredictionColumns:
    """The predictions of one rule (one model) for one batch, as columns in the batch's order."""

    service: Service
    model_version: str
    ride_ids: list[str]
    event_ids: list[str]
    event_times: list[datetime]
    values: list[float]
    scored_at: datetime
    remaining_min: list[float] | None = None
    variant: str | None = None  # while a deployment plan is in force (the contract's ``variant``)

    def __len__(self) -> int:
        return len(self.event_ids)

    @cached_property
    def ids(self) -> list[bytes]:
        return prediction_id_bytes(self.service, self.model_version, self.event_ids)

    def keys(self) -> list[bytes]:
        """The message keys: each ride_id (a ride's predictions share its partition)."""
        return [r.encode() for r in self.ride_ids]

    def encoded(self) -> list[bytes]:
        """Each prediction as the bytes ``encode_dict(record)`` gives, built column-wise."""
        if not self.event_ids:
            return []
        head = (b'{"schema_version":' + _literal(SCHEMA_VERSION) + b',"prediction_id":"%b","ride_id":"%b"'
                b',"event_id":"%b","service":' + _literal(self.service) + b',"model_version":'
                + _literal(self.model_version) + b',"value":%b,"unit":' + _literal(UNITS[self.service])
                + b',"event_time":"%b","scored_at":' + _literal(self.scored_at))
        columns = [self.ids, _json_items(self.ride_ids), _json_items(self.event_ids), _json_items(self.values),
                   _json_items(self.event_times)]
        tail = b"" if self.variant is None else b',"variant":' + _literal(self.variant)
        if self.remaining_min is None:
            template = head + tail + b"}"
        else:
            template = head + b',"remaining_min":%b' + tail + b"}"
            columns.append(_json_items(self.remaining_min))
        return [template % row for row in zip(*columns)]

    def records(self) -> list[dict[str, Any]]:
        """The same predictions as contract dicts."""
        remaining = self.remaining_min or [None] * len(self)
        return [prediction_record(self.service, self.model_version, ride, event, at, value, self.scored_at,
                                  remaining_min=left, prediction_id_=pid.decode(), variant=self.variant)
                for ride, event, at, value, left, pid in zip(self.ride_ids, self.event_ids, self.event_times,
                                                             self.values, remaining, self.ids)]


def _without(part: PredictionColumns, muted: set[str]) -> PredictionColumns:
    keep = [i for i, e in enumerate(part.event_ids) if e not in muted]

    def pick(values: list[Any] | None) -> list[Any] | None:
        return None if values is None else [values[i] for i in keep]

    return PredictionColumns(part.service, part.model_version, pick(part.ride_ids), pick(part.event_ids),
                             pick(part.event_times), pick(part.values), part.scored_at, pick(part.remaining_min),
                             part.variant)


class Predictions(Sequence[dict[str, Any]]):
    """All predictions of one batch (one :class:`PredictionColumns` per rule). Reads as a sequence
    of contract dicts; sinks that write bytes use :attr:`parts` and skip the dicts."""

    def __init__(self, parts: Sequence[PredictionColumns] = ()):
        self.parts = [p for p in parts if len(p)]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def without(self, event_ids: set[str]) -> Predictions:
        """These predictions but those answering ``event_ids``."""
        return Predictions([_without(p, event_ids) for p in self.parts]) if event_ids else self

    @cached_property
    def _records(self) -> list[dict[str, Any]]:
        return [r for p in self.parts for r in p.records()]

    def __getitem__(self, index):  # type: ignore[override]
        return self._records[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._records)
