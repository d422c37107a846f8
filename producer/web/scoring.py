"""Synchronous scoring for the web service: the fleet's models (compiled trees where they verify),
with the requests that arrive together scored in one ``predict``.

:class:`BatchedModel` never holds a request back to fill a batch: the first waiting request is
scored at once, and whatever arrives while the trees run is scored together next (batches grow by
themselves under load, like the fleet's ``consume_ready``). :class:`RemoteDuration` asks a separate
``ridestream serve --only predict`` over one kept-alive connection pool, and falls back to the
in-process model when that service does not answer in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, GetPydanticSchema
from pydantic_core import core_schema

from shared.contract.events import Miles, PassengerCount, PaymentType, Zone
from shared.ml.artifacts import Model
from shared.ml.features import REQUEST_FIELDS

log = logging.getLogger("ridestream.web")


# RFC 3339 in UTC, as the contract's times; not strict, because FastAPI hands the model the parsed
# JSON (a str), not the bytes
JsonUtcTime = Annotated[datetime, GetPydanticSchema(
    lambda _t, _h: core_schema.datetime_schema(tz_constraint=0, strict=False))]


class Trip(BaseModel):
    """What a request-time model reads: the request fields of the contract's ``ride_requested``,
    with its rules (no coercion: ``"3"`` is not a zone)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    pickup_zone: Zone
    dropoff_zone: Zone
    trip_distance_mi: Miles
    passenger_count: PassengerCount
    payment_type: PaymentType
    service: Literal["yellow", "green"]
    event_time: JsonUtcTime | None = Field(default=None, description="when the ride is asked for; default: now")


class PredictRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    trips: Annotated[list[Trip], Field(min_length=1, max_length=10_000)]


class PredictResponse(BaseModel):
    model_version: str
    unit: Literal["min", "usd"]
    values: list[float]


def trip_columns(trips: list[Trip], now: float | None = None) -> dict[str, np.ndarray]:
    """The columns a request model's features are built from."""
    now = time.time() if now is None else now
    rows = [(t.trip_distance_mi, t.pickup_zone, t.dropoff_zone, t.passenger_count, t.payment_type) for t in trips]
    table = np.array(rows, dtype=np.float64).reshape(len(trips), 5)
    return {
        "trip_distance_mi": table[:, 0], "pickup_zone": table[:, 1].astype(np.int64),
        "dropoff_zone": table[:, 2].astype(np.int64), "passenger_count": table[:, 3], "payment_type": table[:, 4],
        "service": np.fromiter((t.service == "green" for t in trips), np.bool_, len(trips)),
        "event_time": np.fromiter((t.event_time.timestamp() if t.event_time else now for t in trips),
                                  np.float64, len(trips)),
    }


@dataclass
class BatchStats:
    calls: int = 0
    rows: int = 0
    requests: int = 0


class BatchedModel:
    """One model; concurrent requests share ``predict`` calls, run off the event loop."""

    def __init__(self, model: Model, executor: ThreadPoolExecutor):
        assert set(model.fields) == set(REQUEST_FIELDS), model.name
        self.model = model
        self.executor = executor
        self.stats = BatchStats()
        self._pending: list[tuple[dict[str, np.ndarray], asyncio.Future]] = []
        self._running = False

    @property
    def version(self) -> str:
        return self.model.version

    async def predict(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((cols, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                merged = {f: np.concatenate([c[f] for c, _ in batch]) for f in REQUEST_FIELDS}
                try:
                    values = await loop.run_in_executor(self.executor, self.model.predict_columns, merged)
                except Exception as exc:  # noqa: BLE001 — a model that fails answers every waiting request with it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.stats.calls += 1
                self.stats.rows += len(values)
                self.stats.requests += len(batch)
                start = 0
                for cols, future in batch:
                    n = len(cols["event_time"])
                    if not future.done():
                        future.set_result(values[start:start + n])
                    start += n
        finally:
            self._running = False


class RemoteDuration:
    """The initial duration from a separate duration service (``RIDESTREAM_DURATION_URL``), the
    in-process model when it does not answer within ``timeout_s``."""

    def __init__(self, url: str, fallback: BatchedModel, timeout_s: float = 0.5):
        self.url = url.rstrip("/")
        self.fallback = fallback
        self.client = httpx.AsyncClient(
            base_url=self.url, timeout=timeout_s,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=60))
        self.fallbacks = 0
        self.remote_calls = 0

    async def estimate(self, trip: Trip) -> tuple[float, str, str]:
        """(minutes, model version, where: "remote" or "fallback")."""
        try:
            r = await self.client.post("/v1/predict/duration",
                                       content=PredictRequest(trips=[trip]).model_dump_json(exclude_none=True),
                                       headers={"content-type": "application/json"})
            r.raise_for_status()
            body = r.json()
            self.remote_calls += 1
            return float(body["values"][0]), str(body["model_version"]), "remote"
        except (httpx.HTTPError, KeyError, ValueError, IndexError) as exc:
            self.fallbacks += 1
            if self.fallbacks in (1, 10, 100) or self.fallbacks % 1000 == 0:
                log.warning("duration service at %s did not answer (%s): in-process model (%d times)",
                            self.url, type(exc).__name__, self.fallbacks)
            value = await self.fallback.predict(trip_columns([trip]))
            return float(value[0]), self.fallback.version, "fallback"

    async def close(self) -> None:
        await self.client.aclose()
