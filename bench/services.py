"""``ridestream bench --service duration|tip|cost|all``: each service on the event mix it meets in
production — whole simulated lifecycles (requests, starts, a progress event a minute, completions,
in their natural proportions) — through the phases of the tip bench: passthrough ceiling, the
shipped runtime, the naive per-message loop (bounded in count and time), end-to-end latency at
steady rates beside the echo floor, and one vs two processes.

Events per second count every event taken from the topic, answered or not (a tip process reads
progress events too, and skips them): that is the rate a service keeps up with. One JSON per run,
each service under ``services.<name>`` with the tip bench's keys; with tip in the run, its keys
are also kept at the top level, where readers of the tip bench look for them.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench import fleet  # noqa: E402
from bench.loops import lifecycles, mix, naive, passthrough, preproduce, shipped  # noqa: E402
from bench.run import (  # noqa: E402
    BenchConfig,
    BenchResult,
    fill_steady,
    machine,
    median_latency,
    topics_deleted_after,
)
from bench.window import SteadyWindow  # noqa: E402
from consumers.services import SERVICE_SPECS  # noqa: E402
from shared.contract.topics import TopicSpec, create_topics  # noqa: E402
from shared.kafka.clients import make_admin  # noqa: E402
from shared.kafka.settings import Settings  # noqa: E402
from shared.ml.artifacts import load_model  # noqa: E402

SERVICES = ("tip", "duration", "cost")
LOOPS = ("passthrough", "batched", "naive")
OUTRUN_PASSTHROUGH = 2.0  # the steady topic holds this many times what the passthrough needs


def answers(service: str) -> Callable[[dict], bool]:
    """Whether ``service`` answers an event (the event types of its rules)."""
    types = {rule.event_type for rule in SERVICE_SPECS[service].rules}
    return lambda event: event["event_type"] in types


def quick_config() -> BenchConfig:
    """Every phase, small: checks that it runs (the suite's quick mode)."""
    return BenchConfig(events=3000, repeat=1, naive_events=100, naive_seconds=5, partitions=3,
                       latency_rates=(500.0,), latency_seconds=2, latency_lead_in_s=2, process_events=2000, quix=False,
                       rollout=False, startup=False, delivery=False, warmup_seconds=0.2, window_seconds=0.5,
                       max_steady_events=30_000)


@dataclass
class ServicesResult:
    config: BenchConfig
    services: dict[str, BenchResult] = field(default_factory=dict)
    mix: dict[str, int] = field(default_factory=dict)  # the throughput phase's events, by type

    def as_json(self) -> dict[str, Any]:
        each = {name: {**r.as_json(), "ratios": {k: round(v, 3) for k, v in r.ratios().items()},
                       "of_passthrough": round(r.median("batched") / r.median("passthrough"), 3)}
                for name, r in self.services.items()}
        top = dict(each.get("tip", {}))  # today's readers of the tip bench find its keys where they were
        return {**top, "services": each, "mix": self.mix, "machine": machine(), "config": self.config.__dict__}


def run_services(settings: Settings, cfg: BenchConfig, services: tuple[str, ...],
                 phase: Callable[[str], None] = lambda _: None) -> ServicesResult:
    """Every phase for each service in turn; the topics it made are deleted afterwards."""
    with topics_deleted_after(settings, phase):
        return _measure(settings, cfg, services, phase)


def _measure(settings: Settings, cfg: BenchConfig, services: tuple[str, ...],
             phase: Callable[[str], None]) -> ServicesResult:
    ns = f"{settings.namespace}bench-{uuid.uuid4().hex[:6]}."
    source = f"{ns}lifecycles"
    create_topics(make_admin(settings), [TopicSpec(source, cfg.partitions)])
    phase(f"pre-producing {cfg.events:,} lifecycle events")
    events = lifecycles(cfg.events)
    preproduce(settings, source, events)
    result = ServicesResult(cfg, mix=mix(events))
    # the throughput phases run over a window sized by time, on a topic of lifecycles sized for the
    # passthrough (the fastest) to last its warm-up and window: counted events lasted ~0.6 s, noise
    steady, sized = f"{ns}steady", BenchResult(cfg, {})
    warmup_sink = f"{ns}warmup-out"
    create_topics(make_admin(settings), [TopicSpec(warmup_sink, cfg.partitions)])
    # a service that answers only the requests (6 %) outruns the passthrough, which produces every
    # event: tip read 491,745 events/s against 346,598 and ran out of a topic sized for the latter
    fill_steady(settings, dataclasses.replace(cfg, steady_margin=cfg.steady_margin * OUTRUN_PASSTHROUGH), source,
                steady, warmup_sink, sized, phase, make=lifecycles)
    total = sized.steady_events
    window = partial(SteadyWindow, cfg.warmup_seconds, cfg.window_seconds, total)
    for service in services:
        spec = SERVICE_SPECS[service]
        sink = f"{ns}out-{service}"
        create_topics(make_admin(settings), [TopicSpec(sink, cfg.partitions)])
        naive_models = {name: load_model(name) for name in spec.model_names}  # scikit-learn, one row a call
        phase(f"{service}: compiling the models' trees (once per version)")
        served = {name: dataclasses.replace(m) for name, m in naive_models.items()}
        for m in served.values():
            m.accelerate(settings.compiled_dir, settings.predict_threads)
        r = BenchResult(cfg, {loop: [] for loop in LOOPS}, steady_events=total, estimate_per_s=sized.estimate_per_s)
        answered = answers(service)
        for i in range(cfg.repeat):
            label = f"{service}, round {i + 1}/{cfg.repeat}"
            timed = f"{cfg.window_seconds:g} s window after {cfg.warmup_seconds:g} s"
            phase(f"{label}: passthrough ({timed})")
            r.runs["passthrough"].append(passthrough(settings, steady, sink, total, window=window()))
            phase(f"{label}: ridestream (batched, {timed})")
            r.runs["batched"].append(shipped(settings, steady, sink, served, total, spec=spec, window=window()))
            phase(f"{label}: naive")
            r.runs["naive"].append(naive(settings, source, sink, naive_models, cfg.naive_events, cfg.naive_seconds,
                                         spec=spec))
            if not cfg.fleet:
                continue
            for rate in cfg.latency_rates:
                name = "max" if rate is None else str(int(rate))
                phase(f"{label}: end-to-end latency at {name} events/s")
                r.latency.setdefault(name, []).append(fleet.latency(
                    settings, rate, cfg.latency_seconds, seed=10 + i, service=service, make=lifecycles,
                    answered=answered, lead_in_s=cfg.latency_lead_in_s))
                if rate is not None:
                    phase(f"{label}: the same through echo at {name} events/s")
                    r.latency_floor.setdefault(name, []).append(fleet.latency(
                        settings, rate, cfg.latency_seconds, seed=10 + i, start=fleet.start_echo, service=service,
                        make=lifecycles, lead_in_s=cfg.latency_lead_in_s))
            batch = lifecycles(cfg.process_events, seed=20 + i)
            for n in (1, 2):
                phase(f"{label}: {n} {service} process(es)")
                r.processes.setdefault(str(n), []).append(
                    fleet.processes_throughput(settings, batch, n, service=service, answered=answered))
        result.services[service] = r
    return result


def markdown(result: ServicesResult) -> str:
    m, cfg = machine(), result.config
    shares = ", ".join(f"{t.removeprefix('ride_')} {n / sum(result.mix.values()):.0%}" for t, n in result.mix.items())
    steady = max((r.steady_events for r in result.services.values()), default=0)
    short = sum(m.full_window is False for r in result.services.values() for loop in ("passthrough", "batched")
                for m in r.runs.get(loop, []))
    lines = [f"Each service on whole simulated ride lifecycles ({shares}): passthrough and ridestream timed over "
             f"a {cfg.window_seconds:g} s window after {cfg.warmup_seconds:g} s of warm-up, on a topic of "
             f"{steady:,} lifecycle events" + (f" ({short} run(s) ran out before the window's end)" if short else "")
             + f"; the naive loop on at most {cfg.naive_events:,} of {cfg.events:,}. Median of {cfg.repeat} runs "
             f"(min–max), on {m['cores']} cores / {m['memory_gib']} GiB ({m['cpu']}), one local Kafka broker. "
             "Events/s count every event taken, answered or not.", "",
             "| service | passthrough | ridestream | of passthrough | naive | × naive | 1 process | 2 processes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result.services.items():
        p = r.processes_summary()
        lines.append(f"| {name} | {r.median('passthrough'):,.0f} | {r.median('batched'):,.0f} "
                     f"({r.spread('batched')[0]:,.0f}–{r.spread('batched')[1]:,.0f}) | "
                     f"{r.median('batched') / r.median('passthrough'):.0%} | {r.median('naive'):,.0f} | "
                     f"{r.median('batched') / r.median('naive'):,.0f}× | "
                     f"{p['1']:,.0f} | {p['2']:,.0f} ({p.get('two_vs_one', 0):.2f}×) |" if p else
                     f"| {name} | {r.median('passthrough'):,.0f} | {r.median('batched'):,.0f} | "
                     f"{r.median('batched') / r.median('passthrough'):.0%} | {r.median('naive'):,.0f} | "
                     f"{r.median('batched') / r.median('naive'):,.0f}× | — | — |")
    rows = [(name, rate, q, median_latency(r.latency_floor).get(rate))
            for name, r in result.services.items() for rate, q in median_latency(r.latency).items()]
    if rows:
        lines += ["", "End-to-end latency, event produced → prediction produced (one process, the events it "
                      "answers; median of runs), beside `bench.echo` on the same stream (the floor):", "",
                  "| service | offered events/s | p50 ms | p95 ms | p99 ms | echo p50 / p95 / p99 ms |",
                  "|---|---|---|---|---|---|"]
        for name, rate, q, f in rows:
            echo = f"{f['p50_ms']:.1f} / {f['p95_ms']:.1f} / {f['p99_ms']:.1f}" if f else "—"
            lines.append(f"| {name} | {rate} | {q['p50_ms']:.1f} | {q['p95_ms']:.1f} | {q['p99_ms']:.1f} | {echo} |")
    return "\n".join(lines) + "\n"


def write(result: ServicesResult, output: Path) -> list[Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    md = output.with_suffix(".md")
    md.write_text(markdown(result))
    png = output.with_suffix(".png")
    names = list(result.services)
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 1.0 + 1.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        r = result.services[name]
        medians = [r.median(loop) for loop in LOOPS]
        errs = [[med - r.spread(loop)[0] for loop, med in zip(LOOPS, medians)],
                [r.spread(loop)[1] - med for loop, med in zip(LOOPS, medians)]]
        ax.barh(LOOPS, medians, xerr=errs, color=["#9ca3af", "#2563eb", "#f59e0b"])
        ax.set_xscale("log")
        ax.set_title(f"{name} service, lifecycle mix", fontsize=10)
    axes[-1][0].set_xlabel("events per second (median, min–max, log scale)")
    fig.tight_layout()
    fig.savefig(png, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return [output, md, png]
