"""One benchmark run: the same pre-produced events through each loop, repeated, as ratios.

The throughput loops (passthrough, ridestream and the batched peers) are timed over a steady window
sized by time (``warmup_seconds`` not measured, then ``window_seconds``), on a topic pre-produced
large enough for the fastest of them to last that long (estimated from a warm-up passthrough;
``events`` is only a lower bound). The per-message loops (naive, Quix Streams) stay bounded in
count and time on the ``events`` topic, as do the rollout phases."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from confluent_kafka import KafkaException  # noqa: E402

from bench import delivery, fleet, peers, rollout  # noqa: E402
from bench.delivery import DeliveryResult  # noqa: E402
from bench.fleet import Latency  # noqa: E402
from bench.loops import Measure, naive, passthrough, preproduce, ride_requests, shipped  # noqa: E402
from bench.peers import BATCHED, QUIX, Peer, PeerFailed, PeerUnavailable  # noqa: E402
from bench.rollout import MODES, RolloutModes, RolloutResult, SwapResult  # noqa: E402
from bench.startup import StartupResult, run_startup  # noqa: E402
from bench.startup import markdown as startup_markdown  # noqa: E402
from bench.window import SteadyWindow  # noqa: E402
from shared.contract.topics import TopicSpec, create_topics  # noqa: E402
from shared.kafka.clients import make_admin  # noqa: E402
from shared.kafka.settings import Settings  # noqa: E402
from shared.ml.artifacts import Model, load_model  # noqa: E402

LOOPS = ("passthrough", "batched", "naive", "quix", "faststream", "faust")
WINDOWED = ("passthrough", "batched", "faststream", "faust")  # timed over a steady window sized by time
STEADY_CHUNK = 200_000  # events generated and produced at a time when filling the steady topic


@dataclass
class BenchConfig:
    events: int = 200_000
    repeat: int = 3
    naive_events: int = 3000  # the naive loop is bounded in count…
    naive_seconds: float = 20.0  # …and in time
    partitions: int = 6
    latency_rates: tuple[float | None, ...] = (1000.0, 5000.0, None)  # None: as fast as possible
    latency_seconds: float = 10.0
    # offered before a latency window, not measured: a replica's first seconds are start-up (its
    # first overdue flushes wait out a broker slow to acknowledge, 40–450 ms), not its steady state
    latency_lead_in_s: float = 5.0
    process_events: int = 100_000  # one process vs two
    fleet: bool = True  # the separate-process phases (latency, processes, replay)
    quix: bool = True  # the Quix Streams peer (its own virtualenv, made on first use)
    peers: bool = True  # the batched peers, FastStream and Faust (each its own virtualenv, made on first use)
    warmup_seconds: float = 2.0  # a throughput loop's first seconds, not measured…
    window_seconds: float = 5.0  # …then its steady window
    steady_margin: float = 1.5  # the steady topic holds this many times what the warm-up passthrough would move
    max_steady_events: int = 20_000_000  # the steady topic's cap (a window that runs out says so in the notes)
    peer_latency_rates: tuple[float, ...] = (5000.0,)  # the batched peers' latency, beside ridestream's
    rollout: bool = True  # shadow and canary vs one model; with ``fleet``, p99 across a live swap
    swap_rate: float = 1000.0  # the live swap's offered events/s (for latency_seconds)
    delivery: bool = True  # with ``fleet``: exactly-once beside at-least-once (bench.delivery)
    delivery_rates: tuple[float, ...] = (1000.0, 5000.0)
    startup: bool = True  # with ``fleet``: --help, each service's RSS at a steady stream, start → first prediction
    startup_repeat: int = 3
    startup_rate: float = 1000.0  # the steady stream the services' RSS is sampled under (whole lifecycles)
    startup_seconds: float = 10.0


@dataclass
class BenchResult:
    config: BenchConfig
    runs: dict[str, list[Measure]] = field(default_factory=dict)
    latency: dict[str, list[Latency]] = field(default_factory=dict)
    latency_floor: dict[str, list[Latency]] = field(default_factory=dict)  # bench.echo, same rates
    peer_latency: dict[str, dict[str, list[Latency]]] = field(default_factory=dict)  # peer → rate → rounds
    steady_events: int = 0  # the steady topic's size
    estimate_per_s: float = 0.0  # the warm-up passthrough's rate it was sized from
    processes: dict[str, list[Measure]] = field(default_factory=dict)
    replay: list[Measure] = field(default_factory=list)
    rollout: RolloutResult | None = None  # throughput under no plan, shadow, 50 % canary
    swap: SwapResult | None = None  # p99 with and without a live swap
    drift_off: list[Measure] = field(default_factory=list)  # "batched" with drift counting off (RIDESTREAM_DRIFT)
    delivery: DeliveryResult | None = None  # exactly-once vs at-least-once
    notes: list[str] = field(default_factory=list)
    startup: StartupResult | None = None

    def processes_summary(self) -> dict[str, float]:
        out = {n: statistics.median(m.per_s for m in runs) for n, runs in self.processes.items()}
        if "1" in out and "2" in out and out["1"]:
            out["two_vs_one"] = out["2"] / out["1"]
        return out

    def processes_cpu_busy(self) -> dict[str, float]:
        """Median share of the machine's cores busy while n processes scored, per n."""
        out = {}
        for n, runs in self.processes.items():
            shares = [m.cpu_busy for m in runs if m.cpu_busy is not None]
            if shares:
                out[n] = round(statistics.median(shares), 3)
        return out

    @property
    def measured(self) -> list[str]:
        return [loop for loop, runs in self.runs.items() if runs]

    def median(self, loop: str) -> float:
        return statistics.median(m.per_s for m in self.runs[loop])

    def spread(self, loop: str) -> tuple[float, float]:
        rates = [m.per_s for m in self.runs[loop]]
        return min(rates), max(rates)

    def summary(self) -> dict[str, dict[str, float]]:
        """min / median / max events/s of each measured loop across rounds."""
        return {loop: {"min": round(self.spread(loop)[0], 1), "median": round(self.median(loop), 1),
                       "max": round(self.spread(loop)[1], 1)} for loop in self.measured}

    def peer_targets(self) -> dict[str, Any] | None:
        """Issue 22's targets against the batched peers: ridestream's throughput ≥ 2× the best of
        them (medians), and a lower p99 than each at 5,000 events/s (medians of rounds)."""
        measured = [p.name for p in BATCHED if p.name in self.measured]
        if not measured or "batched" not in self.measured:
            return None
        best = max(measured, key=self.median)
        out: dict[str, Any] = {"best_batched_peer": best,
                               "throughput_vs_best_peer": round(self.median("batched") / self.median(best), 3)}
        out["throughput_2x_met"] = out["throughput_vs_best_peer"] >= 2
        ours = median_latency(self.latency).get("5000")
        theirs = {p: q["5000"]["p99_ms"] for p, q in ((p, median_latency(r)) for p, r in self.peer_latency.items())
                  if "5000" in q}
        if ours and theirs:
            out["p99_ms_at_5000"] = {"ridestream": ours["p99_ms"], **theirs}
            out["p99_lower_met"] = all(ours["p99_ms"] < v for v in theirs.values())
        return out

    def ratios(self) -> dict[str, float]:
        batched = self.median("batched")
        return {f"batched_vs_{loop}": batched / self.median(loop) for loop in self.measured if loop != "batched"}

    def as_json(self) -> dict[str, Any]:
        return {
            "events_per_s": {loop: round(self.median(loop), 1) if runs else None for loop, runs in self.runs.items()},
            "spread_events_per_s": {loop: [round(x, 1) for x in self.spread(loop)] for loop in self.measured},
            "runs": {loop: [{"events": m.events, "seconds": round(m.seconds, 4),
                             **({"full_window": m.full_window} if m.full_window is not None else {})} for m in ms]
                     for loop, ms in self.runs.items()},
            "ratios": {k: round(v, 3) for k, v in self.ratios().items()},
            "latency_ms": median_latency(self.latency),
            "latency_runs": {r: [x.__dict__ for x in runs] for r, runs in self.latency.items()},
            "latency_floor_ms": median_latency(self.latency_floor),
            "latency_floor_runs": {r: [x.__dict__ for x in runs] for r, runs in self.latency_floor.items()},
            "throughput_summary": self.summary(),
            "throughput_window": {"warmup_s": self.config.warmup_seconds, "window_s": self.config.window_seconds,
                                  "steady_events": self.steady_events,
                                  "estimate_events_per_s": round(self.estimate_per_s, 1),
                                  "loops": [loop for loop in WINDOWED if loop in self.measured],
                                  "short_windows": {loop: sum(m.full_window is False for m in self.runs[loop])
                                                    for loop in WINDOWED if loop in self.measured}}
            if self.steady_events else None,
            "peers_latency_ms": {p: median_latency(by_rate) for p, by_rate in self.peer_latency.items()},
            "peers_latency_runs": {p: {r: [x.__dict__ for x in runs] for r, runs in by_rate.items()}
                                   for p, by_rate in self.peer_latency.items()},
            "peer_targets": self.peer_targets(),
            "processes_events_per_s": self.processes_summary(),
            "processes_runs": {n: [round(m.per_s, 1) for m in runs] for n, runs in self.processes.items()},
            "processes_cpu_busy": self.processes_cpu_busy(),
            "replay_events_per_s": statistics.median(m.per_s for m in self.replay) if self.replay else None,
            "rollout": self.rollout.as_json() if self.rollout and self.rollout.rounds else None,
            "swap_latency": self.swap.as_json() if self.swap and self.swap.runs["swap"] else None,
            "drift": drift_json(self),
            "delivery": self.delivery.as_json() if self.delivery and self.delivery.throughput else None,
            "startup": self.startup.as_json() if self.startup else None,
            "notes": self.notes,
            "config": self.config.__dict__,
            "machine": machine(),
        }


def drift_json(result: BenchResult) -> dict[str, Any] | None:
    """Throughput with drift counting on ("batched", as shipped) and off, on the same events, and
    the cost: 1 − off/on per round (the two are interleaved) and of the medians."""
    if not result.drift_off or not result.runs.get("batched"):
        return None
    on, off = [m.per_s for m in result.runs["batched"]], [m.per_s for m in result.drift_off]
    return {"on_events_per_s": round(statistics.median(on), 1), "off_events_per_s": round(statistics.median(off), 1),
            "cost": round(1 - statistics.median(on) / statistics.median(off), 4),
            "cost_per_round": [round(1 - a / b, 4) for a, b in zip(on, off)]}


def machine() -> dict[str, Any]:
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "memory_gib": mem_gib, "cpu": cpu, "python": platform.python_version(),
            "system": platform.platform()}


def median_latency(by_rate: dict[str, list[Latency]]) -> dict[str, dict[str, float]]:
    """Median p50/p95/p99 of the rounds, per offered rate."""
    return {rate: {q: statistics.median(getattr(x, q) for x in runs) for q in ("p50_ms", "p95_ms", "p99_ms")}
            for rate, runs in by_rate.items()}


def bench_topics(settings: Settings) -> set[str]:
    """The topics the bench's phases make (each phase its own namespace under ``<ns>bench-``)."""
    prefix = f"{settings.namespace}bench-"
    return {t for t in make_admin(settings).list_topics(timeout=10).topics if t.startswith(prefix)}


def run(settings: Settings, cfg: BenchConfig, phase: Callable[[str], None] = lambda _: None) -> BenchResult:
    """One run; the topics it made are deleted afterwards, whatever happens (a run makes ~15 and
    would otherwise fill the broker: hundreds of partitions per run)."""
    with topics_deleted_after(settings, phase):
        return _measure(settings, cfg, phase)


@contextmanager
def topics_deleted_after(settings: Settings, phase: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """Delete the bench topics made inside the block when it ends, whatever happens."""
    before = bench_topics(settings)
    try:
        yield
    finally:
        made = sorted(bench_topics(settings) - before)
        if made:
            phase(f"deleting the {len(made)} topics of this run")
            admin = make_admin(settings)  # held until the deletions are done
            for future in admin.delete_topics(made, operation_timeout=30).values():
                try:
                    future.result(60)
                except KafkaException as exc:  # left behind: say so, the figures still stand
                    phase(f"could not delete a topic: {exc.args[0].str()}")


def _measure(settings: Settings, cfg: BenchConfig, phase: Callable[[str], None]) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="ridestream-bench-") as tmp:  # the bench model store
        return _phases(settings, cfg, phase, tmp)


def _phases(settings: Settings, cfg: BenchConfig, phase: Callable[[str], None], tmp: str) -> BenchResult:
    ns = f"{settings.namespace}bench-{uuid.uuid4().hex[:6]}."
    source, sink = f"{ns}requests", f"{ns}out"
    create_topics(make_admin(settings), [TopicSpec(source, cfg.partitions), TopicSpec(sink, cfg.partitions)])
    phase(f"pre-producing {cfg.events:,} ride_requested events")
    preproduce(settings, source, ride_requests(cfg.events))
    model = load_model("tip")  # the naive loop's: scikit-learn, as a hand-written loop would call it
    phase("compiling the tip model's trees (once per version)")
    served = dataclasses.replace(model)  # the same artifact, its own compiled predict
    served.accelerate(settings.compiled_dir, settings.predict_threads)
    result = BenchResult(cfg, {loop: [] for loop in LOOPS})
    modes, store = None, None
    if cfg.rollout:
        phase("preparing the rollout phases: a bench model store with a candidate, a plan per mode")
        store = rollout.bench_store(Path(tmp))
        modes = RolloutModes.prepare(settings, ns, served, store)
        result.rollout = RolloutResult()
        if cfg.fleet:
            result.swap = SwapResult(cfg.swap_rate)
    chosen = ([QUIX] if cfg.quix else []) + (list(BATCHED) if cfg.peers else [])
    pythons = _peer_venvs(settings, chosen, result, phase)
    steady = f"{ns}steady"
    fill_steady(settings, cfg, source, steady, sink, result, phase)
    total = result.steady_events
    window = partial(SteadyWindow, cfg.warmup_seconds, cfg.window_seconds, total)
    for i in range(cfg.repeat):
        label = f"round {i + 1}/{cfg.repeat}"
        phase(f"{label}: passthrough ({cfg.window_seconds:g} s window after {cfg.warmup_seconds:g} s)")
        _windowed(result, "passthrough", label, passthrough(settings, steady, sink, total, window=window()))
        drift_off = partial(_drift_off, result, settings, steady, sink, served, total, window)
        if i % 2:  # drift counting off before or after it, alternating from round to round
            phase(f"{label}: ridestream (batched), drift counting off")
            drift_off()
        phase(f"{label}: ridestream (batched)")
        _windowed(result, "batched", label, shipped(settings, steady, sink, {"tip": served}, total, window=window()))
        if not i % 2:
            phase(f"round {i + 1}/{cfg.repeat}: ridestream (batched), drift counting off")
            drift_off()
        if modes is not None:  # the three interleaved, in an order that rotates from round to round
            runs = {}
            for mode in MODES[i % len(MODES):] + MODES[:i % len(MODES)]:
                phase(f"round {i + 1}/{cfg.repeat}: ridestream under a plan: {mode}")
                runs[mode] = modes.measure(mode, source, sink, served, cfg.events)
            result.rollout.rounds.append(runs)
        phase(f"round {i + 1}/{cfg.repeat}: naive")
        result.runs["naive"].append(naive(settings, source, sink, {"tip": model}, cfg.naive_events,
                                                  cfg.naive_seconds))
        if QUIX.name in pythons:
            phase(f"round {i + 1}/{cfg.repeat}: Quix Streams")
            result.runs["quix"].append(peers.per_message(settings, QUIX, pythons[QUIX.name], source, cfg.partitions,
                                                         cfg.naive_events, cfg.naive_seconds))
        for peer in (p for p in BATCHED if p.name in pythons):
            phase(f"{label}: {peer.title} (batched peer, {cfg.window_seconds:g} s window after {cfg.warmup_seconds:g} s)")
            try:
                _windowed(result, peer.name, label, peers.throughput(settings, peer, pythons[peer.name], steady,
                                                                     cfg.partitions, total, cfg.warmup_seconds,
                                                                     cfg.window_seconds))
            except PeerFailed as exc:
                result.notes.append(f"{label}: {peer.title} throughput not measured: {exc}")
        if not cfg.fleet:
            continue
        for rate in cfg.latency_rates:
            label = "max" if rate is None else str(int(rate))
            phase(f"round {i + 1}/{cfg.repeat}: end-to-end latency at {label} events/s")
            result.latency.setdefault(label, []).append(fleet.latency(settings, rate, cfg.latency_seconds, seed=10 + i,
                                                                                   lead_in_s=cfg.latency_lead_in_s))
            if rate is not None:  # at "max" both queue: a floor would say nothing
                phase(f"round {i + 1}/{cfg.repeat}: the same without decoding or model (echo) at {label} events/s")
                result.latency_floor.setdefault(label, []).append(
                    fleet.latency(settings, rate, cfg.latency_seconds, seed=10 + i, start=fleet.start_echo,
                                  lead_in_s=cfg.latency_lead_in_s))
        for rate in cfg.peer_latency_rates:  # the same events as ridestream's run at that rate (same seed)
            for peer in (p for p in BATCHED if p.name in pythons):
                phase(f"round {i + 1}/{cfg.repeat}: {peer.title} end-to-end latency at {int(rate)} events/s")
                result.peer_latency.setdefault(peer.name, {}).setdefault(str(int(rate)), []).append(
                    fleet.latency(settings, rate, cfg.latency_seconds, seed=10 + i,
                                  start=peers.starter(peer, pythons[peer.name]), lead_in_s=cfg.latency_lead_in_s))
        if result.swap is not None:  # with and without, the first of the two alternating
            for swap in ((False, True) if i % 2 == 0 else (True, False)):
                what = "across a live swap" if swap else "following plans, no swap"
                phase(f"round {i + 1}/{cfg.repeat}: latency at {cfg.swap_rate:g} events/s {what}")
                run_ = rollout.swap_latency(settings, cfg.swap_rate, cfg.latency_seconds, seed=30 + i, store=store,
                                            swap=swap)
                result.swap.runs["swap" if swap else "no_swap"].append(run_)
                if swap and not run_.in_window:
                    result.notes.append(f"Round {i + 1}: the live swap was {'audited' if run_.swapped else 'not audited'}"
                                        f" {'outside' if run_.swapped else 'within 30 s of'} the measured window.")
        events = ride_requests(cfg.process_events, seed=20 + i)
        for n in (1, 2):
            phase(f"round {i + 1}/{cfg.repeat}: {n} tip process(es)")
            result.processes.setdefault(str(n), []).append(fleet.processes_throughput(settings, events, n))
        phase(f"round {i + 1}/{cfg.repeat}: replay")
        with tempfile.TemporaryDirectory() as tmp:
            result.replay.append(fleet.replay_throughput(settings, source, Path(tmp) / "replay.jsonl"))
        if cfg.delivery:
            result.delivery = result.delivery or DeliveryResult(cfg.delivery_rates)
            delivery.measure_round(result.delivery, settings, i, ride_requests(cfg.process_events, seed=50 + i),
                                   cfg.latency_seconds, lambda text: phase(f"round {i + 1}/{cfg.repeat}: {text}"))
    if cfg.fleet and cfg.startup:
        phase("start-up and footprint: --help, each service's RSS at a steady stream, start → first prediction")
        result.startup = run_startup(settings, repeat=cfg.startup_repeat, rate=cfg.startup_rate,
                                     seconds=cfg.startup_seconds)
    return result


def _drift_off(result: BenchResult, settings: Settings, source: str, sink: str, served: Model, n: int,
               window: Callable[[], SteadyWindow]) -> None:
    """The shipped runtime with drift counting off, on a copy of the served model (same trees), over
    the same steady window as "batched"."""
    quiet = dataclasses.replace(served, observers=[])
    result.drift_off.append(shipped(settings.model_copy(update={"drift": False}), source, sink, {"tip": quiet}, n,
                                    window=window()))


def _peer_venvs(settings: Settings, chosen: list[Peer], result: BenchResult,
                phase: Callable[[str], None]) -> dict[str, Path]:
    """Each chosen peer's interpreter; a peer whose virtualenv cannot be made is left out, with a note."""
    pythons = {}
    for peer in chosen:
        phase(f"preparing the {peer.title} virtualenv ({', '.join(peer.requirements)})")
        try:
            pythons[peer.name] = peers.ensure_venv(settings, peer)
        except PeerUnavailable as exc:
            result.notes.append(f"{peer.title} not measured: {exc}")
    return pythons


def fill_steady(settings: Settings, cfg: BenchConfig, source: str, steady: str, sink: str, result: BenchResult,
                 phase: Callable[[str], None], make: Callable[..., list[dict]] = ride_requests) -> None:
    """Make ``steady``, the throughput loops' topic, large enough for the fastest of them (the
    passthrough) to run its warm-up and window, with ``steady_margin`` to spare: a warm-up passthrough
    over the ``events`` topic estimates its rate, then events (``make(n, seed=…)``: ride requests, or
    whole lifecycles for the per-service bench) are produced ``STEADY_CHUNK`` at a time until there
    are enough (never fewer than ``events``, never more than ``max_steady_events``)."""
    phase(f"warm-up passthrough over the {cfg.events:,} events, to size the steady topic")
    estimate = passthrough(settings, source, sink, cfg.events).per_s
    needed = math.ceil(estimate * (cfg.warmup_seconds + cfg.window_seconds) * cfg.steady_margin)
    total = min(max(cfg.events, needed), cfg.max_steady_events)
    create_topics(make_admin(settings), [TopicSpec(steady, cfg.partitions)])
    done, chunk = 0, 0
    while done < total:
        n = min(STEADY_CHUNK, total - done)
        phase(f"pre-producing the steady topic: {done:,} of {total:,} events ({estimate:,.0f} events/s in the "
              f"warm-up passthrough)")
        preproduce(settings, steady, make(n, seed=1000 + chunk))
        done, chunk = done + n, chunk + 1
    result.steady_events, result.estimate_per_s = total, estimate


def _windowed(result: BenchResult, loop: str, label: str, m: Measure) -> None:
    result.runs[loop].append(m)
    if m.full_window is False:
        result.notes.append(f"{label}: {loop} ran out of the {result.steady_events:,} steady events before its "
                            f"window's end: measured over {m.seconds:.2f} s only")


def markdown(result: BenchResult) -> str:
    m = machine()
    cfg = result.config
    windowed = ", ".join(loop for loop in WINDOWED if loop in result.measured)
    lines = [
        f"Tip service, ride_requested events, median of {cfg.repeat} runs (min–max), on {m['cores']} cores / "
        f"{m['memory_gib']} GiB ({m['cpu']}), one local Kafka broker. {windowed}: each timed over a steady "
        f"{cfg.window_seconds:g} s window after {cfg.warmup_seconds:g} s of warm-up, on {result.steady_events:,} "
        f"pre-produced events (sized from a warm-up passthrough at {result.estimate_per_s:,.0f} events/s); "
        f"the per-message loops on {cfg.events:,} events, at most {cfg.naive_events:,} and "
        f"{cfg.naive_seconds:g} s each.",
        "",
        "| loop | events/s | min–max | vs ridestream |",
        "|---|---|---|---|",
    ]
    batched = result.median("batched")
    for loop in result.measured:
        lo, hi = result.spread(loop)
        lines.append(f"| {loop} | {result.median(loop):,.0f} | {lo:,.0f}–{hi:,.0f} | {result.median(loop) / batched:.2f}× |")
    r = result.ratios()
    versus = f"{r['batched_vs_naive']:.0f}× the naive loop"
    if "batched_vs_quix" in r:
        versus += f", {r['batched_vs_quix']:.0f}× the Quix Streams application"
    for peer in BATCHED:
        if f"batched_vs_{peer.name}" in r:
            versus += f", {r[f'batched_vs_{peer.name}']:.1f}× {peer.title} (batched)"
    lines += ["", f"ridestream = {r['batched_vs_passthrough']:.0%} of the passthrough ceiling, {versus}."]
    targets = result.peer_targets()
    if targets:
        line = (f"Against the best batched peer ({targets['best_batched_peer']}): "
                f"{targets['throughput_vs_best_peer']:.1f}× (target ≥ 2×: "
                f"{'met' if targets['throughput_2x_met'] else 'not met'})")
        if "p99_ms_at_5000" in targets:
            p99 = targets["p99_ms_at_5000"]
            line += (f"; p99 at 5,000 events/s {', '.join(f'{k} {v:.1f} ms' for k, v in p99.items())} (target: lower "
                     f"than every peer: {'met' if targets['p99_lower_met'] else 'not met'})")
        lines += ["", line + "."]
    lines += [f"{note}" for note in result.notes]
    drift = drift_json(result)
    if drift:
        lines += ["", f"Drift counting (each batch's features into the model's reference bins, docs/monitoring.md): "
                      f"{drift['on_events_per_s']:,.0f} events/s on (as shipped, the figure above) vs "
                      f"{drift['off_events_per_s']:,.0f} off, a cost of {drift['cost']:.1%} at the median "
                      f"(per round: {', '.join(f'{c:.1%}' for c in drift['cost_per_round'])})."]
    if result.latency:
        lines += ["", "End-to-end latency, event produced → prediction produced (one tip process, median of runs), "
                      "and the same for `bench.echo`, which moves the bytes without decoding or model (the floor):", "",
                  "| offered events/s | p50 ms | p95 ms | p99 ms | echo p50 / p95 / p99 ms |", "|---|---|---|---|---|"]
        floor = median_latency(result.latency_floor)
        for rate, q in median_latency(result.latency).items():
            f = floor.get(rate)
            echo = f"{f['p50_ms']:.1f} / {f['p95_ms']:.1f} / {f['p99_ms']:.1f}" if f else "—"
            lines.append(f"| {rate} | {q['p50_ms']:.1f} | {q['p95_ms']:.1f} | {q['p99_ms']:.1f} | {echo} |")
    if result.peer_latency:
        ours = median_latency(result.latency)
        lines += ["", "The batched peers as services on the same streams (the same events, one process each, the same "
                      "batch size and wait as ridestream's process), median of runs (p99 and the measured events "
                      "scored within the reader's wait, per run; a process that falls behind is measured on what it "
                      "scored):", "",
                  "| offered events/s | process | p50 ms | p95 ms | p99 ms | p99 per run | scored per run |",
                  "|---|---|---|---|---|---|---|"]
        rates = sorted({r for by_rate in result.peer_latency.values() for r in by_rate}, key=float)
        for rate in rates:
            if rate in ours:
                q = ours[rate]
                per = ", ".join(f"{x.p99_ms:.0f}" for x in result.latency[rate])
                scored = ", ".join(f"{x.events:,}" for x in result.latency[rate])
                lines.append(f"| {rate} | ridestream | {q['p50_ms']:.1f} | {q['p95_ms']:.1f} | {q['p99_ms']:.1f} | {per} "
                             f"| {scored} |")
            for peer in BATCHED:
                runs = result.peer_latency.get(peer.name, {}).get(rate)
                if runs:
                    q = median_latency({rate: runs})[rate]
                    per = ", ".join(f"{x.p99_ms:.0f}" for x in runs)
                    scored = ", ".join(f"{x.events:,}" for x in runs)
                    lines.append(f"| {rate} | {peer.name} | {q['p50_ms']:.1f} | {q['p95_ms']:.1f} | {q['p99_ms']:.1f} "
                                 f"| {per} | {scored} |")
    if result.rollout and result.rollout.rounds:
        lines += ["", rollout_markdown(result.rollout)]
    if result.swap and result.swap.runs["swap"]:
        lines += ["", swap_markdown(result.swap, result.config.latency_seconds)]
    if result.processes:
        p = result.processes_summary()
        spread = {n: f" ({min(m.per_s for m in runs):,.0f}–{max(m.per_s for m in runs):,.0f})"
                  for n, runs in result.processes.items()}
        busy = result.processes_cpu_busy()
        cores = (f"; from first to last prediction the {machine()['cores']} cores were {busy['1']:.0%} busy with one "
                 f"and {busy['2']:.0%} with two, broker included" if {"1", "2"} <= set(busy) else f", on {machine()['cores']} cores")
        lines += ["", f"Separate `ridestream consume tip` processes on {result.config.process_events:,} events: "
                      f"one {p.get('1', 0):,.0f} events/s{spread.get('1', '')}, "
                      f"two {p.get('2', 0):,.0f} events/s{spread.get('2', '')} "
                      f"({p.get('two_vs_one', 0):.2f}×{cores})."]
    if result.delivery and result.delivery.throughput:
        lines += ["", delivery.markdown(result.delivery)]
    if result.replay:
        lines += ["", f"Replay of the {result.config.events:,} events to a file: "
                      f"{statistics.median(m.per_s for m in result.replay):,.0f} events/s."]
    if result.startup:
        lines += ["", *startup_markdown(result.startup.as_json())]
    return "\n".join(lines) + "\n"


def rollout_markdown(r: RolloutResult) -> str:
    data = r.as_json()
    lines = ["The same runtime following a deployment plan on the same events (the three interleaved, median of "
             "rounds): no plan (one model), shadow (the candidate scores every event too and publishes to the "
             "shadow topic: two predicts per batch), a 50 % canary (each batch split by ride):", "",
             "| under a plan | events/s | min–max | vs no plan, median (per round) |", "|---|---|---|---|"]
    for mode in MODES:
        lo, hi = data["spread_events_per_s"][mode]
        ratio = "1.00×" if mode == "single" else \
            f"{data[f'{mode}_ratio']:.0%} ({', '.join(f'{x:.0%}' for x in r.ratios(mode))})"
        lines.append(f"| {mode} | {data[mode]:,.0f} | {lo:,.0f}–{hi:,.0f} | {ratio} |")
    shadowed = [x["shadow_events"] for x in data["rounds"]]
    lines += ["", f"Shadow predictions on the shadow topic per round: {', '.join(f'{n:,}' for n in shadowed)}."]
    return "\n".join(lines)


def swap_markdown(s: SwapResult, seconds: float) -> str:
    data = s.as_json()
    lines = [f"End-to-end latency at {s.rate:,.0f} events/s for {seconds:g} s, one `ridestream consume tip` "
             "following plans, with a 50 % canary written half way through the measured stream (the replica loads "
             "the candidate beside the serving model and swaps between two batches) and the same run without "
             "(median of rounds; p99 per round):", "",
             "| run | p50 ms | p95 ms | p99 ms | p99 per round (min–max) |", "|---|---|---|---|---|"]
    for label, name in (("no_swap", "no swap"), ("swap", "live swap")):
        q = data[label]
        per_round = ", ".join(f"{x.p99_ms:.0f}" for x in s.runs[label])
        lo, hi = data[f"{label}_p99_spread_ms"]
        lines.append(f"| {name} | {q['p50_ms']:.1f} | {q['p95_ms']:.1f} | {q['p99_ms']:.1f} | "
                     f"{per_round} ({lo:.0f}–{hi:.0f}) |")
    swaps = s.runs["swap"]
    at = ", ".join(f"{x.swap_at_s:.1f} s" if x.swap_at_s is not None else "none" for x in swaps)
    loads = ", ".join(f"{x.load_s:.2f} s" for x in swaps if x.load_s is not None)
    lines += ["", f"The swap added {data['p99_added_ms']:+.1f} ms to p99 at the median. Audited \"swapped\" inside "
                  f"the measured window in {data['swaps_in_window']} of {len(swaps)} rounds (at {at} into a "
                  f"{statistics.median(x.window_s for x in swaps):.0f} s window; the candidate loaded in {loads})."]
    return "\n".join(lines)


def write(result: BenchResult, output: Path) -> list[Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    md = output.with_suffix(".md")
    md.write_text(markdown(result))
    png = output.with_suffix(".png")
    modes = result.rollout is not None and bool(result.rollout.rounds)
    fig, axes = plt.subplots(2 if modes else 1, 1, figsize=(6, 5.6 if modes else 3.2),
                             gridspec_kw={"height_ratios": [4, 3]} if modes else None, squeeze=False)
    ax = axes[0][0]
    loops = result.measured
    medians = [result.median(loop) for loop in loops]
    errs = [[med - result.spread(loop)[0] for loop, med in zip(loops, medians)],
            [result.spread(loop)[1] - med for loop, med in zip(loops, medians)]]
    colours = {"passthrough": "#9ca3af", "batched": "#2563eb", "naive": "#f59e0b", "quix": "#10b981",
               "faststream": "#db2777", "faust": "#7c3aed"}
    ax.barh(loops, medians, xerr=errs, color=[colours.get(loop, "#6b7280") for loop in loops])
    ax.set_xscale("log")  # the per-message loops are orders of magnitude slower
    ax.set_xlabel("events per second (median, min–max, log scale)")
    ax.set_title("ridestream tip service vs the ceiling, per-message loops and batched peers")
    if modes:
        rx, r = axes[1][0], result.rollout
        medians = [statistics.median(r.per_s(mode)) for mode in MODES]
        errs = [[med - min(r.per_s(mode)) for mode, med in zip(MODES, medians)],
                [max(r.per_s(mode)) - med for mode, med in zip(MODES, medians)]]
        rx.barh(MODES, medians, xerr=errs, color=["#2563eb", "#7c3aed", "#0891b2"])
        rx.set_xlabel("events per second (median, min–max)")
        rx.set_title("the same runtime under a deployment plan")
        fig.tight_layout()
    fig.savefig(png, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return [output, md, png]
