"""``ridestream bench --rebalance``: how long partitions stand still when the tip service's group
changes — a replica joining (scale-out), leaving (SIGTERM) and dying (SIGKILL) — with the classic
group protocol (cooperative-sticky) and with Kafka 4's consumer group protocol (KIP-848).

Events stream at a steady rate for the whole run; every event's wait is its prediction's broker
timestamp minus its own (the first prediction: a dead member's uncommitted events are scored
again). For each change, the figure is the **longest wait of any event produced after it**: a
partition that stands still for G seconds from the change on makes its next event wait about G,
so this is the time until every partition is served again, whenever in the change the pause
falls. The waits before the first change give the calm p99 to read it against.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from bench.fleet import contract_topics, read_timestamps, start_services, stop_services
from bench.loops import ride_requests
from shared.contract.codec import encode_dict
from shared.kafka.clients import make_admin, make_producer, produce
from shared.kafka.settings import Settings

PROTOCOLS = ("classic", "consumer")
CHANGES = ("join", "leave", "die")


@dataclass
class RebalanceConfig:
    rate: float = 300.0  # events/s, all the run long
    replicas: int = 2  # before the first change
    settle_s: float = 10.0  # calm after the group is stable, before the first change
    window_s: float = 20.0  # after a join or a leave, before the next change
    die_window_s: float = 60.0  # after a SIGKILL: longer than the session timeout
    guard_s: float = 3.0  # the end of a window whose events the next change may hold up: not counted
    session_timeout_ms: int = 45_000  # RIDESTREAM_SESSION_TIMEOUT_MS; for KIP-848 set on the group
    protocols: tuple[str, ...] = PROTOCOLS


def quick_config() -> RebalanceConfig:
    """Every change, small windows, a short session, Kafka 4's protocol only (the classic one is
    what the fleet tests run on): checks the bench runs, never its figures."""
    return RebalanceConfig(rate=100.0, settle_s=2.0, window_s=5.0, die_window_s=10.0, guard_s=1.0,
                           session_timeout_ms=6_000, protocols=("consumer",))


@dataclass
class ChangeResult:
    change: str
    events_after: int  # produced in the change's window
    scored_after: int
    longest_wait_ms: float  # the time until every partition is served again
    p99_wait_ms: float


@dataclass
class ProtocolResult:
    protocol: str
    calm_p99_ms: float
    changes: list[ChangeResult] = field(default_factory=list)


def _members(admin: Any, group: str) -> int:
    try:
        return len(admin.describe_consumer_groups([group])[group].result(timeout=10).members)
    except (KafkaException, TimeoutError):  # not there yet, or its coordinator is still loading
        return 0


def _wait_members(admin: Any, group: str, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _members(admin, group) == n:
            return True
        time.sleep(0.2)
    return False


class _Stream:
    """ride_requested events at a steady rate in a thread of their own, until stopped."""

    def __init__(self, settings: Settings, rate: float):
        self.settings, self.rate = settings, rate
        self.stop = threading.Event()
        self.produced = 0
        self._thread = threading.Thread(target=self._run, name="bench-rebalance-stream", daemon=True)

    def _run(self) -> None:
        producer = make_producer(self.settings, **{"linger.ms": 1})
        topic = self.settings.topics.events
        pool = ride_requests(5000, seed=5)
        t0 = time.monotonic()
        i = 0
        while not self.stop.is_set():
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = {**pool[i % len(pool)], "event_id": f"rb-{i}", "ride_id": f"rb-ride-{i}"}
            produce(producer, topic, encode_dict(event), event["ride_id"].encode())
            producer.poll(0)
            i += 1
        producer.flush(30)
        self.produced = i

    def __enter__(self) -> _Stream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self._thread.join(60)


def _group_session(admin: Any, group: str, timeout_ms: int) -> None:
    """KIP-848 times sessions out on the broker: the group's ``consumer.session.timeout.ms``
    (at least the broker's group.consumer.min.session.timeout.ms; 45 s unless set)."""
    entry = ConfigEntry("consumer.session.timeout.ms", str(timeout_ms), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=[entry])
    try:
        admin.incremental_alter_configs([resource])[resource].result(10)
    except KafkaException as exc:
        raise RuntimeError(f"the cluster refused a KIP-848 session of {timeout_ms} ms for {group} "
                           f"({exc.args[0].str()}); set RIDESTREAM_SESSION_TIMEOUT_MS within the broker's "
                           "group.consumer.min/max.session.timeout.ms") from None


def _measure_protocol(settings: Settings, cfg: RebalanceConfig, protocol: str,
                      phase: Callable[[str], None]) -> ProtocolResult:
    scoped = contract_topics(settings, f"rebalance-{protocol}")
    env = {"RIDESTREAM_GROUP_PROTOCOL": protocol, "RIDESTREAM_SESSION_TIMEOUT_MS": str(cfg.session_timeout_ms)}
    admin = make_admin(scoped)
    group = scoped.group_id("tip")
    procs: list[subprocess.Popen] = []
    marks: list[tuple[str, int, int]] = []  # (change, from ms, to ms) in broker-timestamp time
    if protocol == "consumer":
        _group_session(admin, group, cfg.session_timeout_ms)
    try:
        with _Stream(scoped, cfg.rate) as stream:
            procs += start_services(scoped, cfg.replicas, env)
            if not _wait_members(admin, group, cfg.replicas, 120):
                raise RuntimeError(f"{protocol}: the tip group did not reach {cfg.replicas} members")
            time.sleep(cfg.settle_s / 2)  # the backlog of the start-up is scored
            calm_from = int(time.time() * 1000)
            time.sleep(cfg.settle_s / 2)
            calm_until = int(time.time() * 1000)

            phase(f"rebalance ({protocol}): a replica joins")
            procs += start_services(scoped, 1, env)
            _wait_members(admin, group, cfg.replicas + 1, 120)
            t = int(time.time() * 1000)  # from its joining, not its start-up (the same for both protocols)
            time.sleep(cfg.window_s)
            marks.append(("join", t, int(time.time() * 1000)))

            phase(f"rebalance ({protocol}): a replica leaves (SIGTERM)")
            t = int(time.time() * 1000)
            procs[0].send_signal(signal.SIGTERM)
            time.sleep(cfg.window_s)
            marks.append(("leave", t, int(time.time() * 1000)))

            phase(f"rebalance ({protocol}): a replica dies (SIGKILL)")
            t = int(time.time() * 1000)
            procs[1].send_signal(signal.SIGKILL)
            time.sleep(cfg.die_window_s)
            marks.append(("die", t, int(time.time() * 1000)))
        produced = read_timestamps(scoped, scoped.topics.events, stream.produced, 60)
        scored = read_timestamps(scoped, scoped.topics.predictions("tip"), len(produced), 120)
    finally:
        stop_services(procs, stopped=procs[:2])  # the one that left and the one killed, on purpose
    waits = {e: scored[e] - ts for e, ts in produced.items() if e in scored}
    calm = [w for e, w in waits.items() if calm_from <= produced[e] < calm_until]
    result = ProtocolResult(protocol, round(float(np.percentile(calm, 99)), 1) if calm else float("nan"))
    for change, start, end in marks:
        window = [e for e, ts in produced.items() if start <= ts < end - cfg.guard_s * 1000]
        got = [waits[e] for e in window if e in waits]
        result.changes.append(ChangeResult(change, len(window), len(got), float(max(got, default=float("nan"))),
                                           round(float(np.percentile(got, 99)), 1) if got else float("nan")))
    return result


def run_rebalance(settings: Settings, cfg: RebalanceConfig,
                  phase: Callable[[str], None] = lambda _: None) -> list[ProtocolResult]:
    return [_measure_protocol(settings, cfg, protocol, phase) for protocol in cfg.protocols]


def as_json(results: list[ProtocolResult], cfg: RebalanceConfig) -> dict[str, Any]:
    return {"protocols": {r.protocol: asdict(r) for r in results}, "config": asdict(cfg)}


def markdown(results: list[ProtocolResult], cfg: RebalanceConfig) -> str:
    lines = [f"Rebalances of the tip service's group ({cfg.replicas} replicas, then a third joins, one leaves "
             f"with SIGTERM, one dies with SIGKILL), events at {cfg.rate:,.0f}/s throughout; the longest wait of "
             f"an event produced after each change (up to {cfg.guard_s:.0f} s before the next) is the time until "
             f"every partition is served again. "
             f"Session timeout {cfg.session_timeout_ms / 1000:.0f} s (classic: the client's session.timeout.ms; "
             f"KIP-848: the group's consumer.session.timeout.ms, set by the bench). {_machine()}", "",
             "| protocol | calm p99 ms | join: longest wait ms | leave: longest wait ms | die: longest wait ms |",
             "|---|---|---|---|---|"]
    for r in results:
        by = {c.change: c for c in r.changes}
        cells = [f"{by[c].longest_wait_ms:,.0f} ({by[c].scored_after:,}/{by[c].events_after:,} scored)"
                 if c in by else "—" for c in CHANGES]
        lines.append(f"| {r.protocol} | {r.calm_p99_ms:,.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, load average {load}."


def write_rebalance(results: list[ProtocolResult], cfg: RebalanceConfig, output: Path) -> list[Path]:
    """``output`` (JSON, the figures under ``rebalance``) and its Markdown beside it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps({"rebalance": as_json(results, cfg)}, option=orjson.OPT_INDENT_2))
    md = output.with_suffix(".md")
    md.write_text(markdown(results, cfg))
    return [output, md]
