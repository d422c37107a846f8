"""Exactly-once beside at-least-once: the same `ridestream consume tip` process in each mode, in the
same run, interleaved (the order alternates from round to round).

Exactly-once output becomes visible to a ``read_committed`` reader only when its transaction
commits, so here times are taken where a reader sees the prediction: a reader that follows the
output topic live notes when each prediction arrives (its wall clock), minus the event's broker
timestamp (set by the producer on the same machine). Throughput is a backlog published at once
(one transaction, as :func:`bench.fleet.processes_throughput` does) until its last prediction is
visible. Both modes are measured the same way, so the ratios compare like with like.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from confluent_kafka import TopicPartition

from bench.fleet import (
    Latency,
    contract_topics,
    offer,
    publish_at_once,
    read_timestamps,
    start_services,
    stop_services,
    wait_for_group,
)
from bench.loops import Measure, ride_requests
from shared.kafka.clients import make_consumer
from shared.kafka.settings import Settings

MODES = ("at_least_once", "exactly_once")


@dataclass
class DeliveryResult:
    rates: tuple[float, ...]
    latency: dict[str, dict[str, list[Latency]]] = field(default_factory=dict)  # mode → rate → runs
    throughput: dict[str, list[Measure]] = field(default_factory=dict)  # mode → runs

    def median_latency(self, mode: str, rate: str) -> dict[str, float]:
        runs = self.latency.get(mode, {}).get(rate, [])
        return {q: statistics.median(getattr(r, q) for r in runs) for q in ("p50_ms", "p95_ms", "p99_ms")}

    def median_throughput(self, mode: str) -> float:
        return statistics.median(m.per_s for m in self.throughput[mode]) if self.throughput.get(mode) else 0.0

    def ratios(self) -> dict[str, float]:
        """Exactly-once ÷ at-least-once: throughput (target ≥ 0.5) and p99 at each rate."""
        out: dict[str, float] = {}
        alos, eos = self.median_throughput("at_least_once"), self.median_throughput("exactly_once")
        if alos:
            out["eos_vs_alos_throughput"] = eos / alos
        for rate in self.latency.get("exactly_once", {}):
            a = self.median_latency("at_least_once", rate)["p99_ms"]
            e = self.median_latency("exactly_once", rate)["p99_ms"]
            if a:
                out[f"eos_vs_alos_p99_at_{rate}"] = e / a
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "events_per_s": {m: round(self.median_throughput(m), 1) for m in self.throughput},
            "throughput_runs": {m: [round(x.per_s, 1) for x in runs] for m, runs in self.throughput.items()},
            "latency_ms": {m: {r: self.median_latency(m, r) for r in by_rate} for m, by_rate in self.latency.items()},
            "latency_runs": {m: {r: [x.__dict__ for x in runs] for r, runs in by_rate.items()}
                             for m, by_rate in self.latency.items()},
            "ratios": {k: round(v, 3) for k, v in self.ratios().items()},
        }


def env_of(mode: str) -> dict[str, str]:
    return {"RIDESTREAM_PROCESSING": mode}


class VisibleReader:
    """Follows a topic from its start at ``read_committed`` and notes when (wall clock, ms) each
    prediction's event_id is first seen."""

    def __init__(self, settings: Settings, topic: str):
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._consumer = make_consumer(settings, f"{settings.namespace}bench-visible-{time.monotonic_ns()}")
        parts = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self._thread = threading.Thread(target=self._run, name="bench-visible", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self._consumer.consume(num_messages=10_000, timeout=0.05)
            now = time.time() * 1000
            for msg in msgs:
                if msg.error() is None:
                    self.seen.setdefault(orjson.loads(msg.value())["event_id"], now)

    def wait(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not ids <= self.seen.keys():
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def visible_latency(settings: Settings, mode: str, rate: float, seconds: float, seed: int,
                    lead_in_s: float = 2.0) -> Latency:
    """One tip process in ``mode``, warmed up, then a steady stream at ``rate`` whose first
    ``lead_in_s`` seconds are not measured: event produced → prediction visible to a reader."""
    scoped = contract_topics(settings, f"delivery-{mode}-{int(rate)}")
    source, sink = scoped.topics.events, scoped.topics.predictions("tip")
    procs = start_services(scoped, 1, env_of(mode))
    reader: VisibleReader | None = None
    ids: set[str] = set()
    try:
        reader = VisibleReader(scoped, sink)
        warm = ride_requests(200, seed=seed + 1000)
        offer(scoped, source, warm, None)
        reader.wait({e["event_id"] for e in warm}, 120)
        lead = ride_requests(int(rate * lead_in_s), seed=seed + 2000)
        events = ride_requests(int(rate * seconds), seed=seed)
        offer(scoped, source, lead + events, rate)
        ids = {e["event_id"] for e in events}
        reader.wait(ids, 120)
        produced = {k: v for k, v in read_timestamps(scoped, source, len(warm) + len(lead) + len(events), 60).items()
                    if k in ids}
    finally:
        try:
            if reader is not None:
                reader.close()
        finally:
            stop_services(procs, explain=reader is None or not ids <= reader.seen.keys())
    delays = np.array([reader.seen[k] - produced[k] for k in ids if k in reader.seen and k in produced])
    p50, p95, p99 = np.percentile(delays, [50, 95, 99]) if len(delays) else (np.nan,) * 3
    return Latency(rate, len(delays), round(float(p50), 1), round(float(p95), 1), round(float(p99), 1))


def visible_throughput(settings: Settings, mode: str, events: list[dict]) -> Measure:
    """One tip process in ``mode``, settled in its group; a backlog published at once, until its
    last prediction is visible to a reader."""
    scoped = contract_topics(settings, f"delivery-{mode}-backlog")
    procs = start_services(scoped, 1, env_of(mode))
    try:
        wait_for_group(scoped, 1)
        started = time.monotonic()
        publish_at_once(scoped, scoped.topics.events, events)
        seen = read_timestamps(scoped, scoped.topics.predictions("tip"), len(events), 300)
        return Measure(len(seen), time.monotonic() - started)
    finally:
        stop_services(procs)


def measure_round(result: DeliveryResult, settings: Settings, i: int, events: list[dict], seconds: float,
                  phase=lambda _: None) -> None:
    """One round: each mode's throughput and latency at each rate, the modes' order alternating."""
    order = MODES if i % 2 == 0 else MODES[::-1]
    for mode in order:
        phase(f"{mode.replace('_', '-')}: a backlog of {len(events):,} events")
        result.throughput.setdefault(mode, []).append(visible_throughput(settings, mode, events))
    for rate in result.rates:
        for mode in order:
            phase(f"{mode.replace('_', '-')}: latency at {rate:g} events/s")
            result.latency.setdefault(mode, {}).setdefault(str(int(rate)), []).append(
                visible_latency(settings, mode, rate, seconds, seed=40 + i))


def markdown(result: DeliveryResult) -> str:
    r = result.ratios()
    lines = ["Exactly-once beside at-least-once (one tip process; times where a `read_committed` reader sees the "
             "prediction; median of runs):", "",
             "| mode | backlog events/s | " + " | ".join(f"p50 / p99 ms at {k}/s" for k in
                                                         result.latency.get("exactly_once", {})) + " |",
             "|---|---|" + "---|" * len(result.latency.get("exactly_once", {}))]
    for mode in MODES:
        cells = [f"{q['p50_ms']:.1f} / {q['p99_ms']:.1f}" for q in
                 (result.median_latency(mode, rate) for rate in result.latency.get(mode, {}))]
        lines.append(f"| {mode.replace('_', '-')} | {result.median_throughput(mode):,.0f} | "
                     + " | ".join(cells) + " |")
    if "eos_vs_alos_throughput" in r:
        p99 = ", ".join(f"p99 {v:.2f}× at {k.rsplit('_', 1)[1]}/s" for k, v in r.items()
                        if k.startswith("eos_vs_alos_p99"))
        lines += ["", f"Exactly-once = {r['eos_vs_alos_throughput']:.0%} of at-least-once throughput "
                      f"(target ≥ 50 %); {p99}."]
    return "\n".join(lines) + "\n"
