"""``ridestream replay SERVICE``: backfill or re-score any range of rides.events."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ridestream.console import err, out


def replay(
    service: str = typer.Argument(..., help="duration, tip or cost"),
    start: str = typer.Option("earliest", "--from", help="earliest, latest, an ISO 8601 time or p:o,p:o"),
    end: str = typer.Option("latest", "--to", help="earliest, latest, an ISO 8601 time or p:o,p:o (exclusive)"),
    model: list[str] = typer.Option(None, "--model", help="VERSION, NAME=VERSION or an artifact folder"),
    output_topic: str = typer.Option(None, help="default rides.predictions.<service>.backfill"),
    output: Path = typer.Option(None, help="write to a .parquet, .csv or .jsonl file instead of a topic"),
    evaluate: bool = typer.Option(False, "--evaluate", help="MAE per model version against the rides' actuals"),
) -> None:
    """Score a fixed range of rides.events with the service's runtime; stops by itself."""
    from consumers.offsets import parse_position
    from consumers.replay import Recorder, plan
    from consumers.replay import replay as run_replay
    from consumers.services import SERVICE_SPECS, pick_models
    from consumers.sinks import FileSink, KafkaSink
    from shared.contract.topics import SERVICES, TopicSpec, create_topics
    from shared.kafka.clients import make_admin, require_topics
    from shared.kafka.settings import load_settings

    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
    if output is not None and output_topic is not None:
        raise typer.BadParameter("choose --output or --output-topic, not both")
    first, last = parse_position(start), parse_position(end)
    settings = load_settings()
    spec = SERVICE_SPECS[service]  # type: ignore[index]
    models = pick_models(spec, model, settings)
    file_sink = FileSink(output) if output is not None else None  # a bad suffix is refused before connecting
    admin = make_admin(settings)
    require_topics(admin, settings, [settings.topics.events])
    if file_sink is not None:
        sink: FileSink | KafkaSink = file_sink
        where = str(output)
    else:
        topic = output_topic or settings.topics.backfill(service)
        create_topics(admin, [TopicSpec(topic, settings.predictions_partitions, settings.replication_factor)])
        sink = KafkaSink(settings, topic, dlq_topic=None)
        where = topic
    ranges = plan(settings, first, last)
    size = sum(e - s for s, e in ranges.values())
    recorder = Recorder(sink, service, evaluate=evaluate)
    versions = ", ".join(f"{n} {m.version}" for n, m in models.items())
    err.print(f"replaying {size:,} events of {settings.topics.events} through {service} ({versions}) → {where}")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]:>9,.0f} events/s"), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task(f"replay {service}", total=size, rate=0.0)

        def advance(n: int) -> None:
            bar.advance(task, n)
            bar.update(task, rate=bar.tasks[task].speed or 0.0)

        totals = run_replay(settings, spec, models, ranges, recorder, progress=advance,
                            observe=recorder.observe if evaluate else None)
    invalid = ""
    if totals.dead_letters:
        invalid = (f", {totals.dead_letters:,} invalid → {file_sink.dlq_path} (bytes and reasons)" if file_sink
                   else f", {totals.dead_letters:,} invalid (skipped: the live services dead-lettered them)")
    err.print(f"scored {totals.consumed:,} events: {totals.predictions:,} predictions to {where}{invalid}")
    if evaluate:
        report = recorder.mae_by_version()
        if not report:
            err.print("nothing to evaluate: no ride_completed event in the range for the rides scored")
            return
        table = Table("model version", "predictions", "rides", f"MAE ({spec.unit})",
                      title=f"{service}: predictions vs actuals of the rides completed in the range")
        for row in report:
            table.add_row(row["model_version"], f"{row['predictions']:,}", f"{row['rides']:,}", f"{row['mae']:.3f}")
        out.print(table)
