"""``ridestream drift``: a range of rides.events against the models' training data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

from ridestream.console import err, out
from shared.errors import RidestreamError


def drift(
    start: str = typer.Option("earliest", "--from", help="earliest, latest, an ISO 8601 time or p:o,p:o"),
    end: str = typer.Option("latest", "--to", help="earliest, latest, an ISO 8601 time or p:o,p:o (exclusive)"),
    model: list[str] = typer.Option(None, "--model", help="NAME=VERSION (or alias) instead of NAME's champion; "
                                    "repeatable. Default: the champions of all four models"),
    html: Path = typer.Option(None, "--html", help="also write the report as a self-contained HTML page"),
) -> None:
    """Per-feature PSI and Wasserstein distance of a range of rides.events against each model
    version's training data, the shifted features first, and the models' MAE on its completed rides."""
    from consumers.drift_report import build, render
    from consumers.offsets import parse_position
    from consumers.replay import plan
    from shared.kafka.clients import make_admin, require_topics
    from shared.kafka.settings import load_settings
    from shared.ml.artifacts import MODEL_NAMES, load_model

    versions: dict[str, str | None] = dict.fromkeys(MODEL_NAMES)
    for choice in model or []:
        name, sep, version = choice.partition("=")
        if not sep or name not in MODEL_NAMES or not version:
            raise RidestreamError(f"--model {choice!r}: expected NAME=VERSION with NAME one of {', '.join(MODEL_NAMES)}")
        versions[name] = version
    models = {name: load_model(name, version) for name, version in versions.items()}
    settings = load_settings()
    require_topics(make_admin(settings), settings, [settings.topics.events])
    ranges = plan(settings, parse_position(start), parse_position(end))
    size = sum(e - s for s, e in ranges.values())
    err.print(f"reading {size:,} messages of {settings.topics.events}")
    report = build(settings, models, ranges)
    for m in report.models:
        quality = (f"MAE {m.mae:.3f} on {m.rides:,} completed rides (trained {m.trained_mae:.3f})"
                   if m.mae is not None and m.trained_mae else "no completed rides to judge")
        table = Table("feature", "PSI", "Wasserstein (σ)", "verdict", box=box.SIMPLE_HEAD,
                      title=f"{m.model} {m.version}: {m.rows:,} rows; {quality}")
        for f in m.features:
            colour = {"shifted": "red", "moderate": "yellow", "stable": "green"}.get(f.verdict, "dim")
            table.add_row(f.feature, f"{f.psi:.3f}", "-" if f.wasserstein is None else f"{f.wasserstein:.3f}",
                          f"[{colour}]{f.verdict}[/]")
        out.print(table if m.features else f"{m.model} {m.version}: {m.note}")
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render(report))
        out.print(f"wrote {html}")
