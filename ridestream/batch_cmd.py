"""``ridestream score-batch`` and ``ridestream report``: the periodic job and its dashboard."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ridestream.console import out


def _default_url() -> str:
    from shared.kafka.settings import load_settings

    return f"sqlite:///{load_settings().state_dir / 'results.db'}"


def score_batch(
    input: list[str] = typer.Option(None, "--input", help="TLC files, folders or globs (CSV/Parquet)"),
    input_db: str = typer.Option(None, help="read the trips from this database (SQLAlchemy URL) instead"),
    table: str = typer.Option(None, help="with --input-db: the table of trips (TLC column names)"),
    since: str = typer.Option(None, help="with --input-db: only trips picked up at or after this ISO 8601 time "
                              "(without an offset: New York time, as TLC records it)"),
    db: str = typer.Option(None, help="SQLAlchemy URL of the results database (default: SQLite in .ridestream/)"),
    run_id: str = typer.Option(None, help="the run's id; rerunning one replaces its rows"),
) -> None:
    """Score trips (files, or a database table) with every service's model, in batches, into the results database."""
    from consumers.batch import connect, read_trip_table, score_batch_files, score_batch_trips, shown

    if bool(input) == bool(input_db):
        raise typer.BadParameter("give the trips with --input FILE… or with --input-db URL --table TABLE (one of them)")
    if input_db and not table:
        raise typer.BadParameter("--input-db needs --table: the table that holds the trips")
    if (table or since) and not input_db:
        raise typer.BadParameter("--table and --since go with --input-db")
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(f"--since {since!r}: expected an ISO 8601 time such as 2019-03-05T13:00:00") from None
    url = db or _default_url()
    connect(url).dispose()  # a URL it cannot open is refused before the scoring, not after
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), console=out) as bar:
        task = bar.add_task("score", total=None)
        if input_db:
            source = f"{shown(input_db)} table {table}" + (f" since {since}" if since else "")
            run = score_batch_trips(read_trip_table(input_db, table, start), source, url, run_id,
                                    step=lambda n: bar.advance(task, n))
        else:
            run = score_batch_files(input, url, run_id, step=lambda n: bar.advance(task, n))
    versions = ", ".join(f"{s} {v}" for s, v in run.model_versions.items())
    out.print(f"run {run.run_id}: {run.trips:,} trips, {run.rows:,} predictions ({versions}) → {shown(url)}")


def report(
    db: str = typer.Option(None, help="SQLAlchemy URL of the results database"),
    run_id: str = typer.Option(None, help="which run (default: the latest)"),
    out_file: Path = typer.Option(Path("reports/dashboard.html"), "--out", help="where the HTML goes"),
) -> None:
    """Write a self-contained HTML dashboard of a batch-scoring run."""
    from consumers.report import load_results, render

    runs, preds = load_results(db or _default_url(), run_id)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(render(runs, preds))
    out.print(f"wrote {out_file} ({len(preds):,} predictions)")
