"""The ledger of ``ridestream dlq redrive``: one record per source message re-published from the
DLQ to ``rides.events``, on the compacted ``rides.events.dlq.redriven`` (key = the source's
``topic/partition/offset``), written in the same transaction as the event itself."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.contract.events import SCHEMA_VERSION, UtcTime, WireModel

REDRIVEN_SUFFIX = ".redriven"  # after the DLQ's name


class RedriveRecord(WireModel):
    """A source message re-published from the DLQ: when, from which DLQ entry, and the reason it
    had been refused for."""

    schema_version: Literal[1] = SCHEMA_VERSION
    redriven_at: UtcTime
    dlq_partition: Annotated[int, Field(ge=0)]
    dlq_offset: Annotated[int, Field(ge=0)]
    reason: Annotated[str, Field(min_length=1)]
