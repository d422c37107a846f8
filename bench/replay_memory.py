"""Peak memory of a streamed replay as the range grows: ``ridestream replay SERVICE --output
x.parquet`` over the first 10 % of a topic of whole simulated lifecycles, then over all of it
(0.4 M and 4 M events by default), each a separate process whose peak RSS the kernel reports
(``ru_maxrss``). Flat memory means the two peaks are close whatever the range.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from bench.fleet import _service_env, contract_topics
from bench.loops import lifecycles, preproduce
from bench.startup import ridestream_command, timed_child
from shared.kafka.clients import make_consumer
from shared.kafka.settings import Settings

CHUNK = 200_000  # events generated and produced at a time: 4 M event dicts would not fit the bench itself


@dataclass
class ReplayMemory:
    service: str
    events: int
    seconds: float
    peak_rss_mb: float
    output_mb: float

    def as_json(self) -> dict[str, Any]:
        return {"service": self.service, "events": self.events, "seconds": round(self.seconds, 2),
                "events_per_s": round(self.events / self.seconds, 1) if self.seconds else None,
                "peak_rss_mb": round(self.peak_rss_mb, 1), "output_mb": round(self.output_mb, 3)}


def produce_lifecycles(settings: Settings, topic: str, n: int, phase=lambda _: None) -> None:
    """``n`` lifecycle events, produced ``CHUNK`` at a time (each chunk its own rides)."""
    done, seed = 0, 1000
    while done < n:
        k = min(CHUNK, n - done)
        preproduce(settings, topic, lifecycles(k, seed=seed))
        done, seed = done + k, seed + 1
        phase(f"produced {done:,} of {n:,} lifecycle events")


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = make_consumer(settings, f"{settings.namespace}bench-ends-{time.monotonic_ns()}")
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        consumer.close()


def replay_memory(settings: Settings, service: str = "duration", sizes: tuple[int, ...] = (400_000, 4_000_000),
                  phase=lambda _: None) -> list[ReplayMemory]:
    """One topic of ``max(sizes)`` events; a replay of each size from its start (the same share of
    every partition), to Parquet, in a process of its own."""
    scoped = contract_topics(settings, "replay-memory")
    topic, total = scoped.topics.events, max(sizes)
    produce_lifecycles(scoped, topic, total, phase)
    ends = _ends(scoped, topic)
    results = []
    for size in sorted(sizes):
        share = size / total
        to = ",".join(f"{p}:{round(end * share)}" for p, end in sorted(ends.items()))
        with tempfile.TemporaryDirectory(prefix="ridestream-replay-memory-") as tmp:
            out = Path(tmp) / "out.parquet"
            phase(f"replaying {size:,} events through {service} to Parquet")
            seconds, peak = timed_child([*ridestream_command(), "replay", service, "--to", to, "--output", str(out)],
                                        env=_service_env(scoped))
            results.append(ReplayMemory(service, size, seconds, peak, out.stat().st_size / 2**20))
    return results


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["Peak memory of `ridestream replay SERVICE --output x.parquet` (a process each, whole lifecycles):", "",
             "| service | events | peak RSS MB | seconds | events/s | Parquet MB |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['service']} | {r['events']:,} | {r['peak_rss_mb']:.0f} | {r['seconds']:.1f} | "
              f"{r['events_per_s']:,.0f} | {r['output_mb']:.1f} |" for r in rows]
    return lines
