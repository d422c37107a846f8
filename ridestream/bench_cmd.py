"""``ridestream bench``: the tip service's throughput side by side with the ceiling, the naive loop
and a Quix Streams application, and under deployment plans (shadow, canary, a live swap)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ridestream.broker_cmd import ensure_local_broker
from ridestream.console import out


def bench(
    events: int = typer.Option(200_000, min=1, help="ride_requested events to pre-produce"),
    repeat: int = typer.Option(3, min=1, help="runs of each loop"),
    naive_events: int = typer.Option(3000, min=1, help="most events the naive loop and Quix process per run"),
    quix: bool = typer.Option(True, help="measure the Quix Streams peer (its own virtualenv, made once)"),
    rollout: bool = typer.Option(True, help="measure the service under a shadow plan and a 50 % canary against one "
                                            "model, and p99 at 1,000 events/s across a live swap against none"),
    output: Path = typer.Option(None, help="JSON; .md and .png beside it (default bench/results/latest.json, "
                                           "with --web bench/results/web.json)"),
    web: bool = typer.Option(False, "--web", help="measure the web service instead: predict endpoint vs one request → "
                                                   "one row, POST /v1/rides, SSE fan-out, request→answer vs event→stream"),
    quick: bool = typer.Option(False, "--quick", help="with --web: every phase, small (checks that it runs)"),
) -> None:
    """Measure, in one run on the same events: passthrough, ridestream, naive, Quix Streams, and ridestream
    under a shadow plan and a 50 % canary; print the ratios."""
    from bench.run import BenchConfig, markdown, write
    from bench.run import run as run_bench
    from shared.kafka.clients import ensure_reachable, make_admin
    from shared.kafka.settings import load_settings

    settings = load_settings()
    ensure_local_broker(settings)
    ensure_reachable(make_admin(settings), settings)
    if web:
        _bench_web(settings, output or Path("bench/results/web.json"), quick)
        return
    output = output or Path("bench/results/latest.json")
    cfg = BenchConfig(events=events, repeat=repeat, naive_events=naive_events, quix=quix, rollout=rollout)
    _measure(lambda phase: run_bench(settings, cfg, phase=phase), write, markdown, output)


def _bench_web(settings, output: Path, quick: bool) -> None:
    from bench.web import WebBenchConfig, quick_config, run_web, write_web
    from bench.web import markdown as web_markdown

    cfg = quick_config() if quick else WebBenchConfig()
    _measure(lambda phase: run_web(settings, cfg, phase=phase), write_web, web_markdown, output)


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
