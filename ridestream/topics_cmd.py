"""``ridestream topics …``: the contract's topics on the configured cluster."""

from __future__ import annotations

import typer
from rich.table import Table

from ridestream.console import out

app = typer.Typer(help="Create and describe the contract's topics.", no_args_is_help=True)


@app.command()
def create(
    partitions: int = typer.Option(None, help="partitions of rides.events (default 6)"),
    retention_hours: float = typer.Option(None, help="retention of every topic (default 168)"),
) -> None:
    """Create the contract topics (events, predictions, DLQ, control, audit, model quality); those that exist are left as they are."""
    from shared.contract.topics import create_topics
    from shared.kafka.clients import ensure_reachable, make_admin
    from shared.kafka.settings import load_settings

    overrides = {"events_partitions": partitions, "retention_hours": retention_hours}
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    admin = make_admin(settings)
    ensure_reachable(admin, settings)
    for name, outcome in create_topics(admin, settings.topic_specs()).items():
        out.print(f"{outcome:>7}  {name}")


@app.command()
def describe() -> None:
    """Partitions and retention of the contract topics."""
    from shared.contract.topics import describe_topics
    from shared.kafka.clients import ensure_reachable, make_admin
    from shared.kafka.settings import load_settings

    settings = load_settings()
    admin = make_admin(settings)
    ensure_reachable(admin, settings)
    table = Table("topic", "partitions", "retention", "replicas")
    names = settings.topics.all()
    for name, info in zip(names, describe_topics(admin, names)):
        if info is None:
            table.add_row(name, "[red]missing[/]", "", "")
        else:
            retention = ("compacted" if info.compacted else "forever" if not info.retention_ms or info.retention_ms < 0
                         else f"{info.retention_ms / 3_600_000:g} h")
            replicas = f"{info.replicas} (min in sync {info.min_insync_replicas})"
            table.add_row(name, str(info.partitions), retention, replicas)
    out.print(table)
