"""One benchmark run: the same pre-produced events through each loop, repeated, as ratios."""

from __future__ import annotations

import json
import os
import platform
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.loops import Measure, naive, passthrough, preproduce, ride_requests, shipped  # noqa: E402
from shared.artifacts import load_model  # noqa: E402
from shared.kafka import make_admin  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.topics import TopicSpec, create_topics  # noqa: E402

LOOPS = ("passthrough", "batched", "naive")


@dataclass
class BenchConfig:
    events: int = 200_000
    repeat: int = 3
    naive_events: int = 3000  # the naive loop is bounded in count…
    naive_seconds: float = 20.0  # …and in time
    partitions: int = 6


@dataclass
class BenchResult:
    config: BenchConfig
    runs: dict[str, list[Measure]] = field(default_factory=dict)

    def median(self, loop: str) -> float:
        return statistics.median(m.per_s for m in self.runs[loop])

    def spread(self, loop: str) -> tuple[float, float]:
        rates = [m.per_s for m in self.runs[loop]]
        return min(rates), max(rates)

    def ratios(self) -> dict[str, float]:
        batched = self.median("batched")
        return {
            "batched_vs_passthrough": batched / self.median("passthrough"),
            "batched_vs_naive": batched / self.median("naive"),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "events_per_s": {loop: round(self.median(loop), 1) for loop in self.runs},
            "spread_events_per_s": {loop: [round(x, 1) for x in self.spread(loop)] for loop in self.runs},
            "runs": {loop: [{"events": m.events, "seconds": round(m.seconds, 4)} for m in ms] for loop, ms in self.runs.items()},
            "ratios": {k: round(v, 3) for k, v in self.ratios().items()},
            "latency_ms": {},
            "config": self.config.__dict__,
            "machine": machine(),
        }


def machine() -> dict[str, Any]:
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "memory_gib": mem_gib, "cpu": cpu, "python": platform.python_version(),
            "system": platform.platform()}


def run(settings: Settings, cfg: BenchConfig, phase: Callable[[str], None] = lambda _: None) -> BenchResult:
    ns = f"{settings.namespace}bench-{uuid.uuid4().hex[:6]}."
    source, sink = f"{ns}requests", f"{ns}out"
    create_topics(make_admin(settings), [TopicSpec(source, cfg.partitions), TopicSpec(sink, cfg.partitions)])
    phase(f"pre-producing {cfg.events:,} ride_requested events")
    preproduce(settings, source, ride_requests(cfg.events))
    model = load_model("tip")
    result = BenchResult(cfg, {loop: [] for loop in LOOPS})
    for i in range(cfg.repeat):
        phase(f"round {i + 1}/{cfg.repeat}: passthrough")
        result.runs["passthrough"].append(passthrough(settings, source, sink, cfg.events))
        phase(f"round {i + 1}/{cfg.repeat}: ridestream (batched)")
        result.runs["batched"].append(shipped(settings, source, sink, {"tip": model}, cfg.events))
        phase(f"round {i + 1}/{cfg.repeat}: naive")
        result.runs["naive"].append(naive(settings, source, sink, model, cfg.naive_events, cfg.naive_seconds))
    return result


def markdown(result: BenchResult) -> str:
    m = machine()
    lines = [
        f"Tip service, {result.config.events:,} ride_requested events, median of {result.config.repeat} runs "
        f"(min–max), on {m['cores']} cores / {m['memory_gib']} GiB ({m['cpu']}), one local Kafka broker.",
        "",
        "| loop | events/s | min–max | vs ridestream |",
        "|---|---|---|---|",
    ]
    batched = result.median("batched")
    for loop in result.runs:
        lo, hi = result.spread(loop)
        lines.append(f"| {loop} | {result.median(loop):,.0f} | {lo:,.0f}–{hi:,.0f} | {result.median(loop) / batched:.2f}× |")
    r = result.ratios()
    lines += ["", f"ridestream = {r['batched_vs_passthrough']:.0%} of the passthrough ceiling, "
                  f"{r['batched_vs_naive']:.0f}× the naive loop."]
    return "\n".join(lines) + "\n"


def write(result: BenchResult, output: Path) -> list[Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    md = output.with_suffix(".md")
    md.write_text(markdown(result))
    png = output.with_suffix(".png")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    loops = list(result.runs)
    medians = [result.median(loop) for loop in loops]
    errs = [[med - result.spread(loop)[0] for loop, med in zip(loops, medians)],
            [result.spread(loop)[1] - med for loop, med in zip(loops, medians)]]
    ax.barh(loops, medians, xerr=errs, color=["#9ca3af", "#2563eb", "#f59e0b"][: len(loops)])
    ax.set_xscale("log")  # the naive loop is orders of magnitude slower
    ax.set_xlabel("events per second (median, min–max, log scale)")
    ax.set_title("ridestream tip service vs the ceiling and the naive loop")
    fig.savefig(png, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return [output, md, png]
