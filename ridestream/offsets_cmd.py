"""``ridestream offsets show|reset GROUP``: a consumer group's position on rides.events."""

from __future__ import annotations

import typer
from rich.table import Table

from ridestream.console import out
from shared.errors import RidestreamError

app = typer.Typer(help="Show or reset a consumer group's offsets.", no_args_is_help=True)


@app.command()
def show(group: str = typer.Argument(..., help="e.g. ridestream-tip"),
         topic: str = typer.Option(None, help="default rides.events")) -> None:
    """Committed offset, end offset and lag per partition."""
    from consumers.offsets import group_offsets
    from shared.kafka.clients import make_admin, make_consumer, require_topics
    from shared.kafka.settings import load_settings

    settings = load_settings()
    topic = topic or settings.topics.events
    require_topics(make_admin(settings), settings, [topic])
    consumer = make_consumer(settings, group)
    try:
        rows = group_offsets(consumer, group, topic)
    finally:
        consumer.close()
    table = Table("partition", "committed", "end", "lag", title=f"{group} on {topic}")
    for r in rows:
        table.add_row(str(r.partition), "-" if r.committed is None else f"{r.committed:,}", f"{r.end:,}", f"{r.lag:,}")
    table.add_row("all", "", f"{sum(r.end for r in rows):,}", f"{sum(r.lag for r in rows):,}")
    out.print(table)


@app.command()
def reset(
    group: str = typer.Argument(..., help="e.g. ridestream-tip"),
    to_earliest: bool = typer.Option(False, "--to-earliest"),
    to_latest: bool = typer.Option(False, "--to-latest"),
    to_time: str = typer.Option(None, "--to-time", help="an ISO 8601 time"),
    topic: str = typer.Option(None, help="default rides.events"),
) -> None:
    """Move the group's offsets; refused while the group has active members."""
    from consumers.offsets import parse_position, reset_group
    from shared.kafka.clients import make_admin, make_consumer, require_topics
    from shared.kafka.settings import load_settings

    chosen = [p for p, on in (("earliest", to_earliest), ("latest", to_latest), (to_time, to_time is not None)) if on]
    if len(chosen) != 1:
        raise RidestreamError("choose one of --to-earliest, --to-latest, --to-time T")
    settings = load_settings()
    topic = topic or settings.topics.events
    admin = make_admin(settings)
    require_topics(admin, settings, [topic])
    consumer = make_consumer(settings, group)
    try:
        target = reset_group(admin, consumer, group, topic, parse_position(chosen[0]))
    finally:
        consumer.close()
    out.print(f"{group} on {topic} now at " + ", ".join(f"{p}:{o}" for p, o in sorted(target.items())))
