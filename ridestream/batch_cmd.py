"""``ridestream score-batch`` and ``ridestream report``: the periodic job and its dashboard."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from consumers.batch import score_batch_files
from consumers.report import load_results, render
from ridestream.console import out
from shared.kafka.settings import load_settings


def _default_url() -> str:
    return f"sqlite:///{load_settings().state_dir / 'results.db'}"


def score_batch(
    input: list[str] = typer.Option(..., "--input", help="TLC files, folders or globs (CSV/Parquet)"),
    db: str = typer.Option(None, help="SQLAlchemy URL of the results database (default: SQLite in .ridestream/)"),
    run_id: str = typer.Option(None, help="the run's id; rerunning one replaces its rows"),
) -> None:
    """Score trip files with every service's model, in batches, into the results database."""
    url = db or _default_url()
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), console=out) as bar:
        task = bar.add_task("score", total=None)
        run = score_batch_files(input, url, run_id, step=lambda n: bar.advance(task, n))
    versions = ", ".join(f"{s} {v}" for s, v in run.model_versions.items())
    out.print(f"run {run.run_id}: {run.trips:,} trips, {run.rows:,} predictions ({versions}) → {url}")


def report(
    db: str = typer.Option(None, help="SQLAlchemy URL of the results database"),
    run_id: str = typer.Option(None, help="which run (default: the latest)"),
    out_file: Path = typer.Option(Path("reports/dashboard.html"), "--out", help="where the HTML goes"),
) -> None:
    """Write a self-contained HTML dashboard of a batch-scoring run."""
    runs, preds = load_results(db or _default_url(), run_id)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(render(runs, preds))
    out.print(f"wrote {out_file} ({len(preds):,} predictions)")
