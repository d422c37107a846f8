"""``ridestream bench``: the tip service's throughput side by side with the ceiling, the naive loop,
a Quix Streams application and the batched peers (FastStream, Faust), and under deployment plans
(shadow, canary, a live swap)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ridestream.broker_cmd import ensure_local_broker
from ridestream.console import out


def bench(
    events: int = typer.Option(200_000, min=1, help="ride_requested events to pre-produce: the per-message loops' "
                                                     "and rollout phases' events, and the least the throughput "
                                                     "loops' steady topic holds (it is sized by time)"),
    repeat: int = typer.Option(3, min=1, help="runs of each loop"),
    naive_events: int = typer.Option(3000, min=1, help="most events the naive loop and Quix process per run"),
    quix: bool = typer.Option(True, help="measure the Quix Streams peer (its own virtualenv, made once)"),
    peers: bool = typer.Option(True, help="measure the batched peers, FastStream and Faust (each its own virtualenv, "
                                          "made once): throughput, and latency at 5,000 events/s"),
    warmup_seconds: float = typer.Option(2.0, min=0.0, help="a throughput loop's warm-up, not measured"),
    window_seconds: float = typer.Option(5.0, min=0.1, help="a throughput loop's steady window, after its warm-up"),
    rollout: bool = typer.Option(True, help="measure the service under a shadow plan and a 50 % canary against one "
                                            "model, and p99 at 1,000 events/s across a live swap against none"),
    delivery: bool = typer.Option(True, help="measure exactly-once beside at-least-once: a backlog's throughput "
                                             "and p99 at 1,000 and 5,000 events/s, in each mode"),
    output: Path = typer.Option(None, help="JSON; .md and .png beside it (default bench/results/latest.json, "
                                           "with --web bench/results/web.json)"),
    web: bool = typer.Option(False, "--web", help="measure the web service instead: predict endpoint vs one request → "
                                                   "one row, POST /v1/rides, SSE fan-out, request→answer vs event→stream"),
    rebalance: bool = typer.Option(False, "--rebalance", help="measure rebalances instead: how long partitions stand "
                                                               "still when a replica joins, leaves or dies, classic "
                                                               "protocol vs KIP-848"),
    service: str = typer.Option(None, "--service", help="duration, tip, cost or all: each service on whole ride "
                                "lifecycles (passthrough, ridestream, naive, latency beside echo, 1 vs 2 processes); "
                                "default output bench/results/services.json"),
    quick: bool = typer.Option(False, "--quick", help="with --web, --rebalance, --service or --fleet: every phase, small "
                               "(checks that it runs)"),
    startup: bool = typer.Option(True, help="measure start-up and footprint: --help, each service's RSS at a "
                                            "steady stream, process start → first prediction (trees cached)"),
    startup_only: bool = typer.Option(False, "--startup-only", help="only the start-up and footprint phase "
                                      "(default output bench/results/startup.json)"),
    startup_rate: float = typer.Option(1000.0, min=1, help="with --startup-only: the steady stream's rate "
                                       "(events/s) at which each service's RSS is sampled"),
    replay_memory: bool = typer.Option(False, "--replay-memory", help="only the peak RSS of streamed replays to "
                                       "Parquet of 0.4 M and 4 M events (default bench/results/replay-memory.json)"),
    replay_service: str = typer.Option("duration", help="with --replay-memory: the service replayed"),
    fleet: bool = typer.Option(False, "--fleet", help="the whole fleet on this machine: the backend (`ridestream "
                               "produce`), the three services and the broker, each a process; the highest rate "
                               "sustained for 60 s (stepping the offered rate), latency at 1,000 and 5,000 events/s, "
                               "CPU per component (default output bench/results/fleet.json)"),
    plan: float = typer.Option(None, "--plan", min=1, help="print what a city sending RATE events/s needs: replicas "
                               "per service, partitions, brokers, from bench/results/services.json and fleet.json"),
) -> None:
    """Measure, in one run on the same events: passthrough, ridestream, naive, Quix Streams, FastStream and
    Faust, and ridestream under a shadow plan and a 50 % canary; print the ratios."""
    from bench.run import BenchConfig, markdown, write
    from bench.run import run as run_bench
    from shared.kafka.clients import ensure_reachable, make_admin
    from shared.kafka.settings import load_settings

    settings = load_settings()
    if plan is not None:
        _plan(settings, plan)
        return
    ensure_local_broker(settings)
    ensure_reachable(make_admin(settings), settings)
    if fleet:
        _bench_fleet(settings, output or Path("bench/results/fleet.json"), quick)
        return
    if web:
        _bench_web(settings, output or Path("bench/results/web.json"), quick)
        return
    if rebalance:
        _bench_rebalance(settings, output or Path("bench/results/rebalance.json"), quick)
        return
    if service is not None:
        _bench_services(settings, service, output or Path("bench/results/services.json"), quick,
                        events=events, repeat=repeat, naive_events=naive_events)
        return
    if startup_only or replay_memory:
        _bench_section(settings, output, startup_only, replay_service, startup_rate)
        return
    output = output or Path("bench/results/latest.json")
    cfg = BenchConfig(events=events, repeat=repeat, naive_events=naive_events, quix=quix, peers=peers,
                      warmup_seconds=warmup_seconds, window_seconds=window_seconds, rollout=rollout,
                      delivery=delivery, startup=startup)
    _measure(lambda phase: run_bench(settings, cfg, phase=phase), write, markdown, output)


def _bench_web(settings, output: Path, quick: bool) -> None:
    from bench.web import WebBenchConfig, quick_config, run_web, write_web
    from bench.web import markdown as web_markdown

    cfg = quick_config() if quick else WebBenchConfig()
    _measure(lambda phase: run_web(settings, cfg, phase=phase), write_web, web_markdown, output)


def _bench_rebalance(settings, output: Path, quick: bool) -> None:
    from bench.rebalance import RebalanceConfig, quick_config, run_rebalance, write_rebalance
    from bench.rebalance import markdown as rebalance_markdown

    cfg = quick_config() if quick else RebalanceConfig(session_timeout_ms=settings.session_timeout_ms)
    _measure(lambda phase: (run_rebalance(settings, cfg, phase=phase), cfg), lambda r, path: write_rebalance(*r, path),
             lambda r: rebalance_markdown(*r), output)


def _bench_services(settings, service: str, output: Path, quick: bool, **sizes: int) -> None:
    from bench.run import BenchConfig
    from bench.services import SERVICES, quick_config, run_services, write
    from bench.services import markdown as services_markdown

    if service != "all" and service not in SERVICES:
        raise typer.BadParameter(f"--service {service!r}: choose duration, tip, cost or all")
    chosen = SERVICES if service == "all" else (service,)
    cfg = quick_config() if quick else BenchConfig(**sizes, quix=False, rollout=False, startup=False, delivery=False,
                                                   latency_rates=(1000.0, 5000.0))
    _measure(lambda phase: run_services(settings, cfg, chosen, phase=phase), write, services_markdown, output)


def _broker_pids(settings) -> list[int]:
    """The local broker's JVM (or the local cluster's), from its pid file; none for another cluster."""
    from ridestream.broker_cmd import local_broker, local_cluster

    if not settings.uses_local_broker:
        return []
    nodes = local_cluster(settings).nodes if settings.broker_nodes > 1 else [local_broker(settings)]
    return [pid for pid in (node.pid() for node in nodes) if pid is not None]


def _bench_fleet(settings, output: Path, quick: bool) -> None:
    from bench.whole_fleet import FleetConfig, quick_config, run_fleet, write
    from bench.whole_fleet import markdown as fleet_markdown

    cfg = quick_config() if quick else FleetConfig()
    pids = _broker_pids(settings)
    _measure(lambda phase: run_fleet(settings, cfg, pids, phase=phase), write, fleet_markdown, output)


def _plan(settings, rate: float) -> None:
    """The capacity plan as a table, each number beside the figure it comes from."""
    from rich.table import Table

    from bench.plan import plan_from_results

    result = plan_from_results(rate, settings.replication_factor, settings.events_partitions)  # one-line error if missing
    table = Table(title=f"capacity plan for {rate:,.0f} ride events/s", title_justify="left")
    table.add_column("what")
    table.add_column("needs", justify="right")
    table.add_column("from")
    for line in result.lines:
        table.add_row(line.what, f"{line.value:,}", line.source)
    out.print(table)
    for note in result.notes:
        out.print(note)


def _bench_section(settings, output: Path | None, startup: bool, replay_service: str,
                   startup_rate: float = 1000.0) -> None:
    """One phase alone: start-up and footprint, or the replays' peak memory."""
    import json

    from bench.run import machine, topics_deleted_after

    if startup:
        from bench.startup import markdown as section_markdown
        from bench.startup import run_startup

        key, output = "startup", output or Path("bench/results/startup.json")

        def run(phase):
            phase("start-up and footprint: --help, each service at a steady stream, start → first prediction")
            return run_startup(settings, rate=startup_rate).as_json()
    else:
        from bench.replay_memory import markdown as section_markdown
        from bench.replay_memory import replay_memory

        key, output = "replay_memory", output or Path("bench/results/replay-memory.json")

        def run(phase):
            return [r.as_json() for r in replay_memory(settings, replay_service, phase=phase)]

    def write(data, path: Path) -> list[Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({key: data, "machine": machine(), "load_average": os.getloadavg()}, indent=2) + "\n")
        path.with_suffix(".md").write_text("\n".join(section_markdown(data)) + "\n")
        return [path, path.with_suffix(".md")]

    def cleaned(phase):
        with topics_deleted_after(settings, phase):
            return run(phase)

    _measure(cleaned, write, lambda data: "\n".join(section_markdown(data)), output)


def _measure(run: Callable[[Callable[[str], None]], Any], write_to: Callable[[Any, Path], list[Path]],
             as_markdown: Callable[[Any], str], output: Path) -> None:
    """Run a benchmark with its phases on a spinner, print its Markdown and write its files."""
    from rich.markdown import Markdown

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=out) as bar:
        task = bar.add_task("starting", total=None)
        result = run(lambda text: bar.update(task, description=text))
    paths = write_to(result, output)
    out.print(Markdown(as_markdown(result)))
    out.print("wrote " + ", ".join(str(p) for p in paths))
