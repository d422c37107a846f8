"""``ridestream bench --web``: the web service side by side, in one run on this machine.

- **predict**: ``POST /v1/predict/duration`` of a ``ridestream serve --only predict`` against the
  usual model web service (:mod:`bench.web_naive`: one request → one single-row scikit-learn
  ``predict``), at the same offered trips per second. Ours is asked the way its API is meant to be
  (``rows_per_request`` trips a request) and the way the baseline is (one trip a request).
- **rides**: ``POST /v1/rides`` (estimate, then ``ride_requested``, the estimate and the state
  record acknowledged by the broker) at fixed offered rates.
- **sse**: ``sse_clients`` clients, each following its own ride over SSE; predictions produced on
  the prediction topics for those rides; delivery latency = produced → received by the client.
- **answer**: the two ways to answer a rider at the same load: request → answer (the estimate in
  the response; in-process, and through the separate duration service over HTTP) against event →
  prediction through the stream (request sent → the duration service's answer received over SSE).

Latencies are measured from when each request was due (an open-loop schedule), so a server that
falls behind shows it in p99 instead of slowing the schedule down.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import orjson

from bench.fleet import RIDESTREAM, contract_topics, stop_services
from bench.loops import ride_requests
from broker.local import free_port
from shared.contract.codec import encode_dict
from shared.kafka.clients import make_producer, produce
from shared.kafka.settings import Settings

REQUEST_FIELDS = ("pickup_zone", "dropoff_zone", "trip_distance_mi", "passenger_count", "payment_type", "service")


@dataclass
class WebBenchConfig:
    predict_rates: tuple[float, ...] = (1000.0, 5000.0, 20000.0)  # offered trips/s
    rows_per_request: int = 100
    seconds: float = 4.0
    max_requests: int = 12_000  # per measured run: the load generator shares the machine too
    give_up_s: float = 10.0  # requests still unanswered this long after a run's schedule ends are abandoned
    ride_rates: tuple[float, ...] = (100.0, 300.0, 1000.0)
    sse_clients: int = 1000
    sse_rate: float = 1000.0  # predictions/s produced for the followed rides
    sse_seconds: float = 5.0
    answer_rate: float = 20.0  # rides/s for the request→answer vs event→stream comparison
    answer_seconds: float = 5.0
    duration_timeout_s: float = 0.5  # the backend's wait for the duration service (the product's default)


def quick_config() -> WebBenchConfig:
    """Every phase, small: for a test that checks the bench runs, never its figures."""
    return WebBenchConfig(predict_rates=(200.0,), rows_per_request=20, seconds=1.0, ride_rates=(50.0,),
                          sse_clients=20, sse_rate=100.0, sse_seconds=1.0, answer_rate=5.0, answer_seconds=1.0,
                          duration_timeout_s=10.0)


@dataclass
class Load:
    name: str
    offered_per_s: float  # trips (predict) or requests (rides) a second
    rows_per_request: int
    requests: int
    ok: int
    errors: int
    per_s: float  # trips (or requests) answered a second
    p50_ms: float
    p99_ms: float


@dataclass
class WebResult:
    config: WebBenchConfig
    predict: list[Load] = field(default_factory=list)
    rides: list[Load] = field(default_factory=list)
    sse: dict[str, Any] = field(default_factory=dict)
    answer: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def predict_ratios(self) -> list[dict[str, float]]:
        """Per offered rate: batched throughput ÷ the baseline's, and both p99s."""
        out = []
        for rate in self.config.predict_rates:
            by = {x.name: x for x in self.predict if x.offered_per_s == rate}
            if "batched" in by and "naive" in by and by["naive"].per_s:
                out.append({"offered_per_s": rate, "throughput_ratio": round(by["batched"].per_s / by["naive"].per_s, 2),
                            "batched_p99_ms": by["batched"].p99_ms, "naive_p99_ms": by["naive"].p99_ms})
        return out

    def as_json(self) -> dict[str, Any]:
        return {"predict": [asdict(x) for x in self.predict], "predict_vs_naive": self.predict_ratios(),
                "rides": [asdict(x) for x in self.rides], "sse": self.sse, "answer": self.answer,
                "notes": self.notes, "config": asdict(self.config)}


# --- servers ------------------------------------------------------------------------------------
def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap, "RIDESTREAM_NAMESPACE": settings.namespace,
            "RIDESTREAM_BATCH_MAX_WAIT_MS": "5", **extra}


def start_server(args: list[str], env: dict[str, str], ready: str = "/readyz", timeout: float = 180) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen([*args, *(["--port", str(port)] if args[:len(RIDESTREAM)] == RIDESTREAM else [str(port)])],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}")
        try:
            if httpx.get(url + ready, timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{' '.join(args)} was not ready within {timeout:.0f}s")


# --- load -----------------------------------------------------------------------------------------
async def offer(send: Callable[[int], Awaitable[None]], rate: float, n: int, max_in_flight: int = 256,
                give_up_s: float | None = None) -> tuple[int, int, float, list[float]]:
    """Send ``n`` requests on an open-loop schedule of ``rate`` a second: (answered, errors, seconds,
    latencies ms). Requests not answered ``give_up_s`` after the schedule's end are cancelled and
    counted as errors, with the time they had waited as their latency (a lower bound): a service
    that cannot keep up shows it in p99 and in its errors, instead of stretching the run."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(max_in_flight)
    t0 = loop.time() + 0.05
    latencies: list[float] = []
    errors = 0
    last = t0

    async def one(i: int) -> None:
        nonlocal errors, last
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        async with gate:
            try:
                await send(i)
            except (aiohttp.ClientError, AssertionError, KeyError, TimeoutError):
                errors += 1
                return
        now = loop.time()
        latencies.append((now - due) * 1000)
        last = max(last, now)

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    end = t0 + n / rate
    _, pending = await asyncio.wait(tasks, timeout=None if give_up_s is None else end + give_up_s - loop.time())
    if pending:
        stopped = loop.time()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        errors += len(pending)
        latencies += [(stopped - (t0 + i / rate)) * 1000 for i, task in enumerate(tasks) if task in pending]
        last = stopped
    return n - errors, errors, max(last - t0, 1e-9), latencies


def _load(name: str, offered: float, rows: int, n: int, outcome: tuple[int, int, float, list[float]]) -> Load:
    ok, errors, seconds, lat = outcome  # lat: the answered ones' and, as a lower bound, the abandoned ones'
    p50, p99 = (np.percentile(lat, [50, 99]).tolist() if lat else [float("nan")] * 2)
    return Load(name, offered, rows, n, ok, errors, round(ok * rows / seconds, 1), round(p50, 1), round(p99, 1))


class _Client:
    """The load generator's HTTP client: kept-alive connections (256 at most) of aiohttp, which
    costs a fifth of httpx's CPU per request — on two shared cores the generator must not be
    what saturates (with httpx it took 87 % of a core at 300 requests/s)."""

    def __init__(self, url: str):
        self.session = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=256),
                                             timeout=aiohttp.ClientTimeout(total=30))

    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.session.close()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self.session.post(path, data=body, headers={"content-type": "application/json"}) as r:
            return r.status, await r.read()

    async def get_json(self, path: str) -> Any:
        async with self.session.get(path) as r:
            return orjson.loads(await r.read())


async def _predict_phase(cfg: WebBenchConfig, trips: list[dict], batched_url: str, naive_url: str) -> list[Load]:
    out = []
    bodies = [orjson.dumps({"trips": trips[i:i + cfg.rows_per_request]})
              for i in range(0, len(trips) - cfg.rows_per_request + 1, cfg.rows_per_request)]
    singles = [orjson.dumps(t) for t in trips]
    one_trip = [orjson.dumps({"trips": [t]}) for t in trips]
    async with _Client(batched_url) as ours, _Client(naive_url) as naive:
        async def post(client: _Client, path: str, body: bytes) -> None:
            status, answer = await client.post(path, body)
            assert status == 200, answer

        for rate in cfg.predict_rates:
            n1 = min(int(rate * cfg.seconds), cfg.max_requests)
            nb = max(1, min(int(rate * cfg.seconds / cfg.rows_per_request), cfg.max_requests))
            runs = [("naive", 1, n1, rate, lambda i: post(naive, "/predict", singles[i % len(singles)])),
                    ("batched", cfg.rows_per_request, nb, rate / cfg.rows_per_request,
                     lambda i: post(ours, "/v1/predict/duration", bodies[i % len(bodies)])),
                    ("batched_one_trip", 1, n1, rate, lambda i: post(ours, "/v1/predict/duration", one_trip[i % len(one_trip)]))]
            for name, rows, n, req_rate, send in runs:
                out.append(_load(name, rate, rows, n, await offer(send, req_rate, n, give_up_s=cfg.give_up_s)))
    return out


async def _rides_phase(cfg: WebBenchConfig, trips: list[dict], url: str) -> list[Load]:
    out = []
    bodies = [orjson.dumps(t) for t in trips]
    async with _Client(url) as client:
        async def post(i: int) -> None:
            status, answer = await client.post("/v1/rides", bodies[i % len(bodies)])
            assert status == 201, answer

        for rate in cfg.ride_rates:
            n = min(int(rate * cfg.seconds), cfg.max_requests)
            out.append(_load("rides", rate, 1, n, await offer(post, rate, n, give_up_s=cfg.give_up_s)))
    return out


# --- SSE fan-out ----------------------------------------------------------------------------------
async def _sse_client(host: str, port: int, ride_id: str, received: list[float], connected: asyncio.Event,
                      counter: list[int], total: int, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v1/rides/{ride_id}/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    counter[0] += 1
    if counter[0] == total:
        connected.set()
    try:
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: ") and b"bench_sent_ns" in line:
                now = time.time_ns()
                start = line.index(b'"bench_sent_ns":') + 16
                end = start
                while line[end:end + 1].isdigit():
                    end += 1
                received.append((now - int(line[start:end])) / 1e6)
    finally:
        writer.close()


def _prediction(i: int, ride: str) -> dict[str, Any]:
    return {"schema_version": 1, "prediction_id": f"bench-{i}", "ride_id": ride, "event_id": f"{ride}-b{i}",
            "service": "duration", "model_version": "vbench", "value": 10.0, "unit": "min",
            "event_time": "2026-01-01T00:00:00Z", "scored_at": "2026-01-01T00:00:00Z", "bench_sent_ns": time.time_ns()}


def _produce_predictions(settings: Settings, rides: list[str], rate: float, n: int) -> None:
    """Play the fleet: ``n`` duration predictions for the followed rides, at ``rate`` a second,
    each stamped with the time it is produced."""
    producer = make_producer(settings, **{"linger.ms": 1})
    topic = settings.topics.predictions("duration")
    # the fleet's producers are long-lived: connect, fetch metadata and get a producer id first
    # (one prediction for a ride nobody follows), or the first few hundred stamps would measure
    # this producer's start-up (~0.5 s), not the fan-out
    produce(producer, topic, encode_dict(_prediction(-1, "bench-warm-up")), b"bench-warm-up")
    producer.flush(30)
    t0 = time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ride = rides[i % len(rides)]
        produce(producer, topic, encode_dict(_prediction(i, ride)), ride.encode())
        producer.poll(0)
    producer.flush(30)


async def _sse_phase(cfg: WebBenchConfig, settings: Settings, trips: list[dict], url: str) -> dict[str, Any]:
    async with _Client(url) as client:
        async def create(i: int) -> str:
            status, answer = await client.post("/v1/rides", orjson.dumps(trips[i % len(trips)]))
            assert status == 201, answer
            return orjson.loads(answer)["ride_id"]

        rides: list[str] = []
        for start in range(0, cfg.sse_clients, 50):
            rides += await asyncio.gather(*(create(i) for i in range(start, min(start + 50, cfg.sse_clients))))
        rss_before = (await client.get_json("/v1/ops"))["replica"]["rss_mb"]
        host, port = url.removeprefix("http://").split(":")
        received: list[float] = []
        connected, stop, counter = asyncio.Event(), asyncio.Event(), [0]
        tasks = [asyncio.create_task(_sse_client(host, int(port), r, received, connected, counter, len(rides), stop))
                 for r in rides]
        await asyncio.wait_for(connected.wait(), 120)
        for _ in range(100):  # until the server holds every client
            if (await client.get_json("/v1/ops"))["replica"]["sse_clients"] >= len(rides):
                break
            await asyncio.sleep(0.1)
        n = int(cfg.sse_rate * cfg.sse_seconds)
        await asyncio.to_thread(_produce_predictions, settings, rides, cfg.sse_rate, n)
        for _ in range(100):
            if len(received) >= n:
                break
            await asyncio.sleep(0.1)
        ops = (await client.get_json("/v1/ops"))["replica"]
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = np.array(received)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]).tolist() if len(lat) else [float("nan")] * 3
    return {"clients": len(rides), "predictions": n, "received": len(received), "offered_per_s": cfg.sse_rate,
            "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1),
            "overflows": ops["sse_overflows"], "rss_mb_before_clients": rss_before, "rss_mb_with_clients": ops["rss_mb"],
            "rides_held": ops["rides_held"]}


# --- request → answer vs event → stream -----------------------------------------------------------
async def _answer_phase(cfg: WebBenchConfig, trips: list[dict], local_url: str, remote_url: str) -> dict[str, dict[str, float]]:
    n = max(1, int(cfg.answer_rate * cfg.answer_seconds))
    out: dict[str, dict[str, float]] = {}
    where: list[str] = []
    for name, url in (("request_answer_in_process", local_url), ("request_answer_remote_duration", remote_url)):
        async with _Client(url) as client:
            async def post(i: int, client: _Client = client) -> None:
                status, answer = await client.post("/v1/rides", orjson.dumps(trips[i % len(trips)]))
                assert status == 201, answer
                where.append(orjson.loads(answer)["estimated_by"])

            ok, errors, _, lat = await offer(post, cfg.answer_rate, n)
        out[name] = _quantiles(lat, ok, errors)
    out["request_answer_remote_duration"]["answered_remotely"] = where.count("remote")

    stream_lat: list[float] = []
    async with _Client(local_url) as client:
        async def ride_then_stream(i: int) -> None:
            t0 = time.monotonic()
            _, answer = await client.post("/v1/rides", orjson.dumps(trips[i % len(trips)]))
            ride_id = orjson.loads(answer)["ride_id"]
            forever = aiohttp.ClientTimeout(total=None)
            async with client.session.get(f"/v1/rides/{ride_id}/events", timeout=forever) as s:
                async for line in s.content:
                    if line.startswith(b"data:") and b'"service":"duration"' in line and b'"initial"' not in line:
                        stream_lat.append((time.monotonic() - t0) * 1000)
                        return
        ok, errors, _, _ = await offer(lambda i: asyncio.wait_for(ride_then_stream(i), 60), cfg.answer_rate, n)
    out["event_stream_duration_service"] = _quantiles(stream_lat, ok, errors)
    return out


def _quantiles(lat: list[float], ok: int, errors: int) -> dict[str, float]:
    p50, p99 = np.percentile(lat, [50, 99]).tolist() if lat else [float("nan")] * 2
    return {"answered": ok, "errors": errors, "p50_ms": round(p50, 1), "p99_ms": round(p99, 1)}


# --- the run --------------------------------------------------------------------------------------
def run_web(settings: Settings, cfg: WebBenchConfig, phase: Callable[[str], None] = lambda _: None) -> WebResult:
    scoped = contract_topics(settings, "web")
    result = WebResult(cfg)
    env = _env(scoped)
    procs: list[subprocess.Popen] = []
    try:
        phase("web: starting the predict service, the baseline and two backends")
        predict_url, p = start_server([*RIDESTREAM, "serve", "--only", "predict"], env)
        procs.append(p)
        # one OpenMP thread per predict, as the fleet's model_threads=1: 40 handler threads each
        # starting a team of OpenMP threads would make the baseline slower than it need be
        naive_url, p = start_server([sys.executable, "-m", "bench.web_naive"], {**env, "OMP_NUM_THREADS": "1"},
                                    ready="/healthz")
        procs.append(p)
        local_url, p = start_server([*RIDESTREAM, "serve"], env)
        procs.append(p)
        remote_url, p = start_server([*RIDESTREAM, "serve"], _env(scoped, RIDESTREAM_DURATION_URL=predict_url,
                                                                  RIDESTREAM_DURATION_TIMEOUT_S=str(cfg.duration_timeout_s)))
        procs.append(p)
        trips = [{k: e[k] for k in REQUEST_FIELDS} for e in ride_requests(2000, seed=7)]
        phase("web: predict endpoint vs one request → one row")
        result.predict = asyncio.run(_predict_phase(cfg, trips, predict_url, naive_url))
        phase("web: POST /v1/rides")
        result.rides = asyncio.run(_rides_phase(cfg, trips, local_url))
        phase(f"web: SSE fan-out to {cfg.sse_clients:,} clients")
        result.sse = asyncio.run(_sse_phase(cfg, scoped, trips, local_url))
        phase("web: request → answer vs event → stream (with the duration service)")
        procs.append(subprocess.Popen([*RIDESTREAM, "consume", "duration"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _warm_fleet(local_url)
        result.answer = asyncio.run(_answer_phase(cfg, trips, local_url, remote_url))
    finally:
        stop_services(procs)
    result.notes.append(f"load average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
                        f"on {os.cpu_count()} cores (the load generator runs on the same cores)")
    return result


def _warm_fleet(url: str, timeout: float = 180) -> None:
    """Wait until the duration service answers a ride (it has joined its group and loaded its models)."""
    ride = httpx.post(url + "/v1/rides", json={"pickup_zone": 161, "dropoff_zone": 236, "trip_distance_mi": 2.0,
                                              "passenger_count": 1, "payment_type": 1, "service": "yellow"}, timeout=30)
    ride_id = ride.json()["ride_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "duration" in httpx.get(f"{url}/v1/rides/{ride_id}", timeout=10).json()["predictions"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the duration service did not answer within {timeout:.0f}s")


# --- output ---------------------------------------------------------------------------------------
def markdown(result: WebResult) -> str:
    cfg = result.config
    lines = ["## The web service", "",
             f"`POST /v1/predict/duration` of `ridestream serve --only predict` (compiled trees, requests that arrive "
             f"together share one predict) against the usual model web service (one request → one single-row "
             f"scikit-learn predict), at the same offered trips/s for {cfg.seconds:g} s each (at most "
             f"{cfg.max_requests:,} requests a run); ours with {cfg.rows_per_request} trips a request (batched) and "
             "with one (batched_one_trip):", "",
             f"Requests still unanswered {cfg.give_up_s:g} s after a run's schedule ended were abandoned and count as "
             "errors, with what they had waited as their latency (a lower bound).", "",
             "| offered trips/s | service | trips/request | answered trips/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]
    for x in result.predict:
        lines.append(f"| {x.offered_per_s:,.0f} | {x.name} | {x.rows_per_request} | {x.per_s:,.0f} | {x.p50_ms:.1f} | "
                     f"{x.p99_ms:.1f} | {x.errors} |")
    lines += [""] + [f"At {r['offered_per_s']:,.0f} trips/s offered: {r['throughput_ratio']:.1f}× the baseline's "
                     f"throughput, p99 {r['batched_p99_ms']:.1f} ms vs {r['naive_p99_ms']:.1f} ms."
                     for r in result.predict_ratios()]
    lines += ["", "`POST /v1/rides` (estimate in-process, then `ride_requested`, the estimate and the state record "
                  "acknowledged by the broker):", "",
              "| offered requests/s | answered/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    for x in result.rides:
        lines.append(f"| {x.offered_per_s:,.0f} | {x.per_s:,.0f} | {x.p50_ms:.1f} | {x.p99_ms:.1f} | {x.errors} |")
    s = result.sse
    if s:
        lines += ["", f"SSE fan-out: {s['clients']:,} clients, each following its own ride on one replica; "
                      f"{s['predictions']:,} predictions produced at {s['offered_per_s']:,.0f}/s for those rides; "
                      f"{s['received']:,} received. Produced → received by the client: p50 {s['p50_ms']:.1f} ms, "
                      f"p95 {s['p95_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms; {s['overflows']} slow-client overflows. "
                      f"Replica memory {s['rss_mb_before_clients']:.0f} MB before the clients connected, "
                      f"{s['rss_mb_with_clients']:.0f} MB with them ({s['rides_held']:,} rides held)."]
    if result.answer:
        names = {"request_answer_in_process": "request → answer, in-process model",
                 "request_answer_remote_duration": "request → answer, through the duration service over HTTP",
                 "event_stream_duration_service": "event → the duration service's prediction over SSE"}
        lines += ["", f"Answering a rider, {cfg.answer_rate:g} rides/s for {cfg.answer_seconds:g} s each:", "",
                  "| way | answered | p50 ms | p99 ms |", "|---|---|---|---|"]
        for key, label in names.items():
            q = result.answer.get(key)
            if q:
                lines.append(f"| {label} | {q['answered']} | {q['p50_ms']:.1f} | {q['p99_ms']:.1f} |")
        remote = result.answer.get("request_answer_remote_duration", {})
        if remote:
            lines += ["", f"Through the duration service, {remote.get('answered_remotely', 0)} of {remote['answered']} "
                          f"estimates came from it; the rest from the in-process fallback (its timeout: "
                          f"{cfg.duration_timeout_s:g} s)."]
    lines += [""] + result.notes
    return "\n".join(lines) + "\n"


def plot(result: WebResult, ax_throughput: Any, ax_latency: Any) -> None:
    rates = list(result.config.predict_rates)
    for name, colour in (("naive", "#f59e0b"), ("batched", "#2563eb"), ("batched_one_trip", "#7c3aed")):
        by = {x.offered_per_s: x for x in result.predict if x.name == name}
        ax_throughput.plot(rates, [by[r].per_s if r in by else np.nan for r in rates], "o-", color=colour, label=name)
        ax_latency.plot(rates, [by[r].p99_ms if r in by else np.nan for r in rates], "o-", color=colour, label=name)
    for ax in (ax_throughput, ax_latency):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered trips/s")
        ax.legend(fontsize=7)
    ax_throughput.set_ylabel("answered trips/s")
    ax_latency.set_ylabel("p99 ms")
    ax_throughput.set_title("predict endpoint vs one request → one row", fontsize=9)
    ax_latency.set_title("p99 latency", fontsize=9)


def write_web(result: WebResult, output: Path) -> list[Path]:
    """The bench's conventions: JSON (figures under ``web``), Markdown and a PNG beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.run import machine

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"web": result.as_json(), "machine": machine()}, indent=2) + "\n")
    md = output.with_suffix(".md")
    m = machine()
    md.write_text(f"On {m['cores']} cores / {m['memory_gib']} GiB ({m['cpu']}), one local Kafka broker.\n\n"
                  + markdown(result))
    png = output.with_suffix(".png")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    plot(result, axes[0], axes[1])
    fig.tight_layout()
    fig.savefig(png, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return [output, md, png]
