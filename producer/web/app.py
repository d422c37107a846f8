"""The rider-facing web service (``ridestream serve``): FastAPI on uvicorn.

Every replica holds the same view of the rides, built from Kafka alone (:mod:`producer.web.kafka_io`
follows ``rides.backend.state`` and the prediction topics), so a load balancer may send any request
to any replica. Changes go through the log: a replica writes its record, waits until it has read
it back, and acts only if its record is the one applied (:mod:`producer.web.table`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from confluent_kafka import KafkaException, Message
from fastapi import FastAPI, Header, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from producer.backend import INITIAL_SERVICE_ID
from producer.web.driver import Driver
from producer.web.fanout import Hub
from producer.web.kafka_io import Follower, Publisher
from producer.web.ops import OpsReader
from producer.web.scoring import (
    BatchedModel,
    PredictRequest,
    PredictResponse,
    RemoteDuration,
    Trip,
    trip_columns,
)
from producer.web.table import Cursor, RideTable, parse_cursor
from shared.contract.backend_state import (
    IDEMPOTENCY_PREFIX,
    NEXT_STAGES,
    IdempotencyRecord,
    RideRecord,
)
from shared.contract.codec import encode_dict
from shared.contract.events import (
    Id,
    Miles,
    Minutes,
    RideCompleted,
    RideProgress,
    RideRequested,
    RideStarted,
    Usd,
    Zone,
    prediction_record,
)
from shared.contract.topics import SERVICES
from shared.data.zones import zone_table
from shared.kafka.settings import Settings
from shared.ml.artifacts import load_served

log = logging.getLogger("ridestream.web")
STATIC = Path(__file__).resolve().parent / "static"
MODEL_OF = {"duration": "initial_duration", "tip": "tip", "cost": "cost"}
UNIT = {"duration": "min", "tip": "usd", "cost": "usd"}
KEEP_ALIVE_S = 15.0


@dataclass
class WebConfig:
    only_predict: bool = False
    duration_url: str | None = None  # RIDESTREAM_DURATION_URL: a separate duration service
    duration_timeout_s: float = 0.5
    max_rides: int = 200_000  # ride states held per replica (a few hundred bytes each)
    max_followed: int = 20_000  # rides whose predictions a replica holds (the most recently predicted)
    per_ride: int = 32  # predictions held per ride (and the latest of each service)
    max_keys: int = 100_000  # idempotency answers held per replica
    client_queue: int = 256  # frames queued per SSE client before it resyncs (or, /v1/stream, is closed)
    replay_s: float = 1800.0  # a replica starting reads this much of the prediction topics
    driver_speedup: float = 60.0
    native_models: bool = True

    @classmethod
    def from_env(cls, **overrides: Any) -> WebConfig:
        env = os.environ
        config = cls(
            duration_url=env.get("RIDESTREAM_DURATION_URL") or None,
            duration_timeout_s=float(env.get("RIDESTREAM_DURATION_TIMEOUT_S", 0.5)),
            max_rides=int(env.get("RIDESTREAM_WEB_MAX_RIDES", 200_000)),
            max_followed=int(env.get("RIDESTREAM_WEB_MAX_FOLLOWED", 20_000)),
            client_queue=int(env.get("RIDESTREAM_WEB_CLIENT_QUEUE", 256)),
            driver_speedup=float(env.get("RIDESTREAM_WEB_DRIVER_SPEEDUP", 60.0)),
        )
        for k, v in overrides.items():
            setattr(config, k, v)
        return config


# --- the API's bodies ------------------------------------------------------------------------------
class RideRequestBody(BaseModel):
    """The request fields of the contract's ``ride_requested``, with its rules; the server sets
    the ids and the time."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)
    pickup_zone: Zone
    dropoff_zone: Zone
    trip_distance_mi: Miles
    passenger_count: Annotated[int, Field(ge=0, le=9)]
    payment_type: Annotated[int, Field(ge=1, le=6, description="TLC payment type code")]
    service: Literal["yellow", "green"]
    rider_id: Id | None = None
    simulate: bool = Field(default=False, description="the backend's simulator plays the driver")


class RideCreated(BaseModel):
    ride_id: str
    initial_duration_min: float
    model_version: str
    requested_at: str
    estimated_by: str = Field(description="in_process, remote (the duration service) or fallback")


class ProgressBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)
    elapsed_min: Minutes
    distance_done_mi: Miles
    distance_left_mi: Miles


class CompleteBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)
    duration_min: Minutes
    fare_amount: Usd
    tip_amount: Usd
    total_amount: Usd


class DriverAnswer(BaseModel):
    ride_id: str
    stage: str
    event_id: str
    seq: int


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class Metrics:
    def __init__(self, web: WebBackend):
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # resident memory: the bound per replica, measured
        self.requests = Counter("ridestream_web_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("ridestream_web_request_seconds", "time to answer a request", ["route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.published = Counter("ridestream_web_published", "messages published", ["topic"], registry=r)
        hub, table = web.hub, web.table
        Gauge("ridestream_web_sse_clients", "open SSE connections", registry=r).set_function(lambda: hub.clients)
        Gauge("ridestream_web_sse_overflows", "frames a slow client could not take (it resynced or was closed)",
              registry=r).set_function(lambda: hub.overflows)
        Gauge("ridestream_web_sse_delivered", "frames handed to SSE clients", registry=r).set_function(lambda: hub.delivered)
        Gauge("ridestream_web_rides_held", "ride states this replica holds", registry=r).set_function(lambda: len(table.states))
        Gauge("ridestream_web_rides_followed", "rides whose predictions this replica holds", registry=r).set_function(
            lambda: len(table.rides))
        Gauge("ridestream_web_state_rejected", "state records that lost a race", registry=r).set_function(
            lambda: table.rejected)
        predict = Gauge("ridestream_web_predict_calls", "model predict calls (each for a batch of requests)",
                        ["service"], registry=r)
        rows = Gauge("ridestream_web_predict_rows", "rows scored", ["service"], registry=r)
        for service in SERVICES:
            predict.labels(service).set_function(lambda s=service: web.models[s].stats.calls if s in web.models else 0)
            rows.labels(service).set_function(lambda s=service: web.models[s].stats.rows if s in web.models else 0)
        Gauge("ridestream_web_duration_fallbacks", "estimates made in-process because the duration service did not "
              "answer", registry=r).set_function(lambda: web.remote.fallbacks if web.remote else 0)


class WebBackend:
    """What one replica holds; made in the app's lifespan, on its event loop."""

    def __init__(self, settings: Settings, config: WebConfig):
        self.settings = settings
        self.config = config
        self.replica = f"{os.uname().nodename}:{os.getpid()}"
        self.table = RideTable(config.max_rides, config.per_ride, config.max_keys, config.max_followed)
        self.hub = Hub(config.client_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="web-predict")
        self.models: dict[str, BatchedModel] = {}
        self.remote: RemoteDuration | None = None
        self.follower: Follower | None = None
        self.publisher: Publisher | None = None
        self.ops: OpsReader | None = None
        self.driver: Driver | None = None
        self.metrics = Metrics(self)

    def load_models(self) -> None:
        native = self.config.native_models and self.settings.native_models
        for service, name in MODEL_OF.items():  # from a cached serving form, without scikit-learn, if there is one
            model = load_served(name, self.settings.compiled_dir if native else None, self.settings.model_threads or 1)
            self.models[service] = BatchedModel(model, self.executor)
        if self.config.duration_url and not self.config.only_predict:
            self.remote = RemoteDuration(self.config.duration_url, self.models["duration"], self.config.duration_timeout_s)

    async def start(self, app: FastAPI) -> None:
        await asyncio.to_thread(self.load_models)
        if self.config.only_predict:
            return
        loop = asyncio.get_running_loop()
        self.publisher = Publisher(self.settings, loop)
        self.follower = Follower(self.settings, loop, self.on_batch, self.config.replay_s)
        self.follower.start()
        self.ops = OpsReader(self.settings)
        self.driver = Driver(app, self.config.driver_speedup)

    async def stop(self) -> None:
        if self.driver:
            await self.driver.close()
        if self.remote:
            await self.remote.close()
        for part in (self.follower, self.ops):
            if part:
                await asyncio.to_thread(part.stop if isinstance(part, Follower) else part.close)
        if self.publisher:
            await asyncio.to_thread(self.publisher.close)
        self.executor.shutdown(wait=False)

    # --- what the follower reads -------------------------------------------------------------------
    def on_batch(self, msgs: list[Message]) -> None:
        topics = self.settings.topics
        state = topics.backend_state
        service_of = {topics.predictions(s): s for s in SERVICES}
        for m in msgs:
            topic = m.topic()
            if topic == state:
                key = (m.key() or b"").decode()
                outcome = self.table.apply_state(key, m.value())
                if outcome.applied and not key.startswith(IDEMPOTENCY_PREFIX) and m.value():
                    self._announce_stage(key)
                continue
            landed = self.table.add_prediction(service_of[topic], m.offset(), m.value())
            if landed is not None:
                self.hub.dispatch(*landed)

    def _announce_stage(self, ride_id: str) -> None:
        """Followers of a ride also get its stage changes (``event: ride``; not a prediction, no id)."""
        followers = self.hub.by_ride.get(ride_id)
        if not followers:
            return
        ride = self.table.ride(ride_id) or {}
        data = orjson.dumps({"ride_id": ride_id, "stage": ride.get("stage"), "seq": ride.get("seq"),
                             "event_type": ride.get("last_event_type"), "at": ride.get("updated_at")})
        for client in followers:
            client.stages.append(b"event: ride\ndata: %b\n\n" % data)
            client.wake.set()

    # --- writing through the log ---------------------------------------------------------------
    async def write_state(self, key: str, value: bytes) -> tuple[int, int]:
        assert self.publisher and self.follower
        topic = self.settings.topics.backend_state
        partition, offset = await self.publisher.send(topic, key.encode(), value)
        self.metrics.published.labels("backend_state").inc()
        try:
            await self.follower.applied(topic, partition, offset)
        except TimeoutError:
            raise HTTPException(503, "this replica has not read the shared ride state back in time; retry") from None
        return partition, offset

    async def known_ride(self, ride_id: str) -> dict[str, Any] | None:
        ride = self.table.ride(ride_id)
        if ride is None and self.follower:
            await self.follower.sync()
            ride = self.table.ride(ride_id)
        return ride


def _problem(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _validation_errors(exc: RequestValidationError) -> JSONResponse:
    fields = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        fields.append({"field": ".".join(loc) or "body", "reason": e.get("msg", "invalid")})
    return _problem(422, "; ".join(f"{f['field']}: {f['reason']}" for f in fields), fields=fields)


def create_app(settings: Settings, config: WebConfig | None = None) -> FastAPI:
    config = config or WebConfig.from_env()
    web = WebBackend(settings, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await web.start(app)
        try:
            yield
        finally:
            await web.stop()

    app = FastAPI(title="ridestream web service", version="1",
                  description="Ride requests with an initial estimate at once, the fleet's predictions live over "
                              "Server-Sent Events, and synchronous scoring on the fleet's models.",
                  lifespan=lifespan)
    app.state.web = web
    app.add_exception_handler(RequestValidationError, lambda _r, exc: _validation_errors(exc))
    app.add_exception_handler(StarletteHTTPException, lambda _r, exc: _problem(exc.status_code, str(exc.detail)))
    app.add_exception_handler(KafkaException, lambda _r, exc: _problem(
        503, f"the Kafka broker did not take the message ({exc.args[0].str() if exc.args else exc}); retry"))
    app.add_middleware(_RequestMetrics, metrics=web.metrics)

    _predict_routes(app, web)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        checks = {"models_loaded": len(web.models) == len(SERVICES)}
        if not config.only_predict:
            f = web.follower
            checks["prediction_topics_assigned"] = bool(f and f.assigned)
            checks["state_caught_up"] = bool(f and f.caught_up)
            checks["broker_reachable"] = bool(f and f.broker_seen and time.monotonic() - f.broker_seen < 15)
        ready = all(checks.values())
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(web.metrics.registry), media_type="text/plain; version=0.0.4")

    if not config.only_predict:
        _ride_routes(app, web)
        _page_routes(app, web)
    return app


def _predict_routes(app: FastAPI, web: WebBackend) -> None:
    @app.post("/v1/predict/{service}", response_model=PredictResponse, tags=["predict"])
    async def predict(service: Literal["duration", "tip", "cost"], body: PredictRequest) -> PredictResponse:
        """Score a list of trips with the fleet's model of ``service`` (duration: the initial
        estimate at request time); requests that arrive together share one ``predict``."""
        model = web.models[service]
        values = await model.predict(trip_columns(body.trips))
        return PredictResponse(model_version=model.version, unit=UNIT[service], values=[round(v, 3) for v in values.tolist()])


def _ride_routes(app: FastAPI, web: WebBackend) -> None:
    settings = web.settings
    topics = settings.topics

    @app.post("/v1/rides", status_code=201, response_model=RideCreated, tags=["rides"],
              responses={422: {"description": "a field breaks the contract: which, and why"}})
    async def request_ride(body: RideRequestBody, response: Response,
                           idempotency_key: Annotated[str | None, Header(max_length=255)] = None) -> Any:
        """Ask for a ride: the initial duration at once, and ``ride_requested`` on rides.events.
        With an ``Idempotency-Key``, a retry — on any replica — gets the same ride, never a second."""
        digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        if idempotency_key:
            known = web.table.idempotent(idempotency_key)
            if known is not None:
                return _replay(known, digest, response)
        now = _now()
        trip = Trip(**body.model_dump(include=set(Trip.model_fields) - {"event_time"}), event_time=now)
        if web.remote:
            value, version, where = await web.remote.estimate(trip)
        else:
            model = web.models["duration"]
            value, version, where = float((await model.predict(trip_columns([trip])))[0]), model.version, "in_process"
        ride_id = f"web-{uuid.uuid4().hex[:20]}"
        created = RideCreated(ride_id=ride_id, initial_duration_min=round(value, 2), model_version=version,
                              requested_at=_iso(now), estimated_by=where)
        if idempotency_key:
            mine = f"{web.replica}/{uuid.uuid4().hex[:12]}"
            claim = IdempotencyRecord(key=idempotency_key, request_hash=digest, ride_id=ride_id,
                                      response=created.model_dump(), writer=mine, created_at=now)
            key = IDEMPOTENCY_PREFIX + idempotency_key
            await web.write_state(key, encode_dict(claim.model_dump(exclude_none=True)))
            winner = web.table.idempotent(idempotency_key)
            if winner is None or winner["writer"] != mine:
                if winner is not None:  # write the winner again, so compaction keeps it and not us
                    await web.publisher.send(topics.backend_state, key.encode(), encode_dict(winner))
                    return _replay(winner, digest, response)
                raise HTTPException(503, "the idempotency record was not read back in time; retry")
        event = RideRequested(event_id=f"{ride_id}-0", ride_id=ride_id, event_time=now, rider_id=body.rider_id,
                              initial_duration_min=created.initial_duration_min,
                              **body.model_dump(include={"pickup_zone", "dropoff_zone", "trip_distance_mi",
                                                         "passenger_count", "payment_type", "service"}))
        request = event.model_dump(exclude_none=True, mode="json")
        record = RideRecord(ride_id=ride_id, seq=0, stage="requested", writer=f"{web.replica}/{ride_id}",
                            updated_at=now, request=request, last_event_type="ride_requested",
                            simulated=body.simulate or None)
        initial = prediction_record("duration", version, ride_id, event.event_id, now, created.initial_duration_min,
                                    _now(), id_service=INITIAL_SERVICE_ID, initial=True)
        key, ts = ride_id.encode(), int(now.timestamp() * 1000)
        await asyncio.gather(
            web.publisher.send(topics.backend_state, key, encode_dict(record.model_dump(exclude_none=True))),
            web.publisher.send(topics.events, key, encode_dict(request), ts),
            web.publisher.send(topics.predictions("duration"), key, encode_dict(initial), ts),
        )
        web.metrics.published.labels("events").inc()
        if body.simulate and web.driver:
            web.driver.play(ride_id, request, created.initial_duration_min)
        return created

    async def drive(ride_id: str, stage: str, make_event: Any) -> DriverAnswer:
        for _ in range(3):
            ride = await web.known_ride(ride_id)
            if ride is None:
                raise HTTPException(404, f"no ride {ride_id}")
            if stage not in NEXT_STAGES[ride["stage"]]:
                verb = {"started": "start", "in_progress": "report progress on", "completed": "complete"}[stage]
                raise HTTPException(409, f"cannot {verb} ride {ride_id}: it is {ride['stage']}")
            seq, now = ride["seq"] + 1, _now()
            event = make_event(event_id=f"{ride_id}-{seq}", ride_id=ride_id, event_time=now,
                               rider_id=ride["request"].get("rider_id"))
            mine = f"{web.replica}/{uuid.uuid4().hex[:12]}"
            record = RideRecord(ride_id=ride_id, seq=seq, stage=stage, writer=mine, updated_at=now,
                                request=ride["request"], last_event_type=event.event_type,
                                simulated=ride.get("simulated"))
            await web.write_state(ride_id, encode_dict(record.model_dump(exclude_none=True)))
            now_state = web.table.ride(ride_id)
            if now_state is not None and now_state["writer"] == mine:
                await web.publisher.send(topics.events, ride_id.encode(), encode_dict(event.model_dump(exclude_none=True)),
                                         int(now.timestamp() * 1000))
                web.metrics.published.labels("events").inc()
                return DriverAnswer(ride_id=ride_id, stage=stage, event_id=event.event_id, seq=seq)
            if now_state is not None:  # another replica changed the ride first: its record stays last
                await web.publisher.send(topics.backend_state, ride_id.encode(), encode_dict(now_state))
        raise HTTPException(409, f"ride {ride_id} is being changed by another request; retry")

    @app.post("/v1/rides/{ride_id}/start", response_model=DriverAnswer, tags=["driver"])
    async def start(ride_id: str) -> DriverAnswer:
        """The driver picked the rider up: ``ride_started``."""
        return await drive(ride_id, "started", RideStarted)

    @app.post("/v1/rides/{ride_id}/progress", response_model=DriverAnswer, tags=["driver"])
    async def progress(ride_id: str, body: ProgressBody) -> DriverAnswer:
        """Where the ride is: ``ride_progress``."""
        return await drive(ride_id, "in_progress", lambda **ids: RideProgress(**ids, **body.model_dump()))

    @app.post("/v1/rides/{ride_id}/complete", response_model=DriverAnswer, tags=["driver"])
    async def complete(ride_id: str, body: CompleteBody) -> DriverAnswer:
        """The ride is over, with its actuals: ``ride_completed``."""
        return await drive(ride_id, "completed", lambda **ids: RideCompleted(**ids, **body.model_dump()))

    @app.get("/v1/rides/{ride_id}", tags=["rides"])
    async def get_ride(ride_id: str) -> dict[str, Any]:
        """Where the ride stands and its latest prediction per service, each with its model version."""
        ride = await web.known_ride(ride_id)
        latest = web.table.latest(ride_id)
        if ride is None and not latest:
            raise HTTPException(404, f"no ride {ride_id}")
        return {"ride_id": ride_id, "stage": ride["stage"] if ride else None,
                "request": ride["request"] if ride else None, "predictions": latest}

    @app.get("/v1/rides/{ride_id}/events", tags=["rides"], response_class=StreamingResponse)
    async def ride_events(ride_id: str, last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
        """Server-Sent Events: the ride's predictions so far, then each as it lands (``event:
        prediction``, data as published; ``event: ride`` for its stage changes). Reconnect with
        ``Last-Event-ID`` to resume, on any replica, with nothing missed."""
        if await web.known_ride(ride_id) is None and not web.table.since(ride_id, None):
            raise HTTPException(404, f"no ride {ride_id}")
        return _sse(_follow_ride(web, ride_id, parse_cursor(last_event_id)))

    @app.get("/v1/stream", tags=["rides"], response_class=StreamingResponse)
    async def stream() -> StreamingResponse:
        """Server-Sent Events: every prediction of every ride as it lands (the operator's view). A
        client that cannot keep up is disconnected."""
        return _sse(_follow_all(web))


def _sse(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _follow_ride(web: WebBackend, ride_id: str, cursor: Cursor | None) -> AsyncIterator[bytes]:
    client = web.hub.join(ride_id, cursor)
    client.cursor = dict(cursor) if cursor else {s: -1 for s in SERVICES}
    backlog = web.table.since(ride_id, cursor)  # in the same step as join: nothing falls between
    try:
        yield b"retry: 1000\n\n"
        ride = web.table.ride(ride_id)
        if ride:
            yield b"event: ride\ndata: %b\n\n" % orjson.dumps(
                {"ride_id": ride_id, "stage": ride["stage"], "seq": ride["seq"], "event_type": ride.get("last_event_type"),
                 "at": ride.get("updated_at")})
        pending = backlog
        while not client.closed:
            for landed in pending:
                if landed.offset > client.cursor.get(landed.service, -1):
                    client.cursor[landed.service] = landed.offset
                    yield landed.frame
            while client.stages:
                yield client.stages.popleft()
            if not client.pending and not client.overflowed:
                client.wake.clear()
                try:
                    await asyncio.wait_for(client.wake.wait(), KEEP_ALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    pending = []
                    continue
            if client.overflowed:  # it fell behind: what it missed comes from the table, not the queue
                client.overflowed = False
                client.pending.clear()
                pending = web.table.since(ride_id, client.cursor)
            else:
                pending = list(client.pending)
                client.pending.clear()
    finally:
        web.hub.leave(client)


async def _follow_all(web: WebBackend) -> AsyncIterator[bytes]:
    client = web.hub.join(None)
    try:
        yield b"retry: 1000\n\n"
        while not client.closed:
            if not client.pending:
                client.wake.clear()
                try:
                    await asyncio.wait_for(client.wake.wait(), KEEP_ALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
            batch = list(client.pending)
            client.pending.clear()
            yield b"".join(b"event: prediction\ndata: %b\n\n" % landed.data for landed in batch)
        yield b"event: overflow\ndata: {\"reason\": \"this client fell behind; reconnect\"}\n\n"
    finally:
        web.hub.leave(client)


def _replay(known: dict[str, Any], digest: str, response: Response) -> Any:
    """The first answer for an Idempotency-Key; refused if the key came with another body."""
    if known["request_hash"] != digest:
        return _problem(422, "Idempotency-Key was already used with another request body",
                        fields=[{"field": "Idempotency-Key", "reason": "used with another request body"}])
    response.headers["Idempotent-Replayed"] = "true"
    return known["response"]


def _page_routes(app: FastAPI, web: WebBackend) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def rider_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/ops", include_in_schema=False)
    async def operator_page() -> FileResponse:
        return FileResponse(STATIC / "ops.html")

    zones = [{"id": int(i), "borough": str(r.borough), "zone": str(r.zone)}
             for i, r in zone_table().iterrows() if i not in (264, 265)]
    zones.sort(key=lambda z: (z["borough"], z["zone"]))

    @app.get("/v1/zones", tags=["pages"])
    async def list_zones() -> list[dict[str, Any]]:
        """The TLC zone table, for choosing pickup and dropoff by name."""
        return zones

    @app.get("/v1/ops", tags=["pages"])
    async def ops() -> dict[str, Any]:
        """The operator's figures: rates, lag per service, DLQ, model versions serving, this replica."""
        figures = web.ops.ask() if web.ops else {}
        versions = {s: sorted(v, key=v.get)[-3:] for s, v in web.table.versions.items()}
        return {**figures, "versions": versions,
                "replica": {"id": web.replica, "sse_clients": web.hub.clients, "rides_held": len(web.table.states),
                            "rides_followed": len(web.table.rides),
                            "sse_overflows": web.hub.overflows, "rss_mb": _rss_mb(),
                            "driving": len(web.driver.tasks) if web.driver else 0}}


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


class _RequestMetrics:
    """Counts and times every request by its route's template (a pure ASGI middleware: it does not
    buffer streaming responses)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                route = scope.get("route")
                name = getattr(route, "path", "other")
                self.metrics.latency.labels(name).observe(time.perf_counter() - start)
                self.metrics.requests.labels(name, str(status["code"])).inc()
            await send(message)

        await self.app(scope, receive, sending)
