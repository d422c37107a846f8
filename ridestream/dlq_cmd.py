"""``ridestream dlq show|redrive``: what the services refused, and sending back what is now valid."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.markup import escape
from rich.table import Table

from ridestream.console import out

app = typer.Typer(help="Read the dead-letter queue and redrive what is now valid.", no_args_is_help=True)


def _since(text: str | None) -> datetime | None:
    from consumers.offsets import parse_position

    if text is None:
        return None
    when = parse_position(text)
    if not isinstance(when, datetime):
        raise typer.BadParameter(f"--since {text!r}: expected an ISO 8601 time such as 2026-11-30T08:00:00Z")
    return when


@app.command()
def show(since: str = typer.Option(None, help="only what was dead-lettered at or after this ISO 8601 time")) -> None:
    """Reasons, counts per service, first and last time, and a sample message of each."""
    from consumers.dlq import read_dead_letters, summarise
    from shared.kafka.clients import make_admin, require_topics
    from shared.kafka.settings import load_settings

    start = _since(since)
    settings = load_settings()
    require_topics(make_admin(settings), settings, [settings.topics.dlq])
    letters = read_dead_letters(settings, start)
    if not letters:
        out.print(f"{settings.topics.dlq} is empty" + (f" since {since}" if since else "") + ": nothing was refused")
        return
    table = Table("reason", "count", "services", "first", "last", "latest message",
                  title=f"{settings.topics.dlq}: {len(letters):,} dead letters", show_lines=False)
    for row in summarise(letters):
        services = ", ".join(f"{s} {n:,}" for s, n in row.services.most_common())
        table.add_row(row.reason, f"{row.count:,}", services, f"{row.first:%Y-%m-%d %H:%M:%S}",
                      f"{row.last:%Y-%m-%d %H:%M:%S}", escape(row.sample[:120]))
    out.print(table)


@app.command("redrive")
def redrive_cmd(
    reason: str = typer.Option(None, help="only this error.type (see `ridestream dlq show`)"),
    since: str = typer.Option(None, help="only what was dead-lettered at or after this ISO 8601 time"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be redriven, publish nothing"),
) -> None:
    """Re-publish to rides.events, once, every refused message the contract accepts now."""
    from consumers.dlq import ledger_topic, redrive
    from shared.kafka.clients import make_admin, require_topics
    from shared.kafka.settings import load_settings

    start = _since(since)
    settings = load_settings()
    require_topics(make_admin(settings), settings, [settings.topics.dlq, settings.topics.events])
    result = redrive(settings, reason=reason, since=start, dry_run=dry_run)
    verb = "would redrive" if dry_run else "redriven"
    parts = [f"{verb} {result.redriven:,} to {settings.topics.events}"]
    if result.already:
        parts.append(f"{result.already:,} already redriven earlier (ledger {ledger_topic(settings)})")
    if result.still_invalid:
        by_count = sorted(result.still_invalid.items(), key=lambda kv: (-kv[1], kv[0]))
        reasons = ", ".join(f"{r} {n:,}" for r, n in by_count)
        parts.append(f"{sum(result.still_invalid.values()):,} still invalid ({reasons})")
    if result.no_body:
        parts.append(f"{result.no_body:,} recorded without their bytes (redrive them from their source offsets)")
    out.print("; ".join(parts))
