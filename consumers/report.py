"""The results database as one self-contained HTML dashboard (inline SVG charts, no scripts):
predicted vs actual per service, error by hour and by borough, per model version."""

from __future__ import annotations

import html
import io
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to SVG text
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from sqlalchemy import text  # noqa: E402

from consumers.batch import engine_for, shown  # noqa: E402
from shared.errors import DataError  # noqa: E402

UNITS = {"duration": "min", "tip": "USD", "cost": "USD"}
SERVICES = ("duration", "tip", "cost")


def load_results(url: str, run_id: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run (the latest by default) and its predictions: none in a database without runs (the page
    says so); a one-line error for a SQLite file that does not exist or a run id it does not hold."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise DataError(f"no results database at {url.removeprefix('sqlite:///')}: run `ridestream score-batch` first")
    engine = engine_for(url)
    with engine.connect() as conn:
        runs = pd.read_sql("SELECT * FROM runs ORDER BY finished_at", conn)
        if run_id is None and len(runs):
            run_id = runs["run_id"].iloc[-1]
        preds = pd.read_sql(text("SELECT * FROM predictions WHERE run_id = :run_id"), conn,
                            params={"run_id": run_id})
    engine.dispose()
    if run_id is not None and run_id not in set(runs["run_id"]):
        known = ", ".join(runs["run_id"].tail(5)) or "none"
        raise DataError(f"no run {run_id!r} in {shown(url)} (latest runs: {known})")
    return runs[runs["run_id"] == run_id], preds


def svg_of(fig: plt.Figure) -> str:
    """A matplotlib figure as inline SVG text (the figure is closed)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _scatter(df: pd.DataFrame, service: str) -> str:
    sample = df.sample(min(len(df), 2000), random_state=0)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.scatter(sample["actual"], sample["value"], s=4, alpha=0.35, color="#2563eb")
    top = float(max(sample["actual"].quantile(0.99), sample["value"].quantile(0.99), 1.0))
    ax.plot([0, top], [0, top], color="#dc2626", linewidth=1, label="perfect")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=f"actual ({UNITS[service]})", ylabel=f"predicted ({UNITS[service]})",
           title=f"{service}: predicted vs actual")
    ax.legend(loc="upper left", frameon=False)
    return svg_of(fig)


def _bars(series: pd.Series, title: str, xlabel: str, kind: str = "bar") -> str:
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    style = {"marker": "o"} if kind == "line" else {}
    series.plot(kind=kind, ax=ax, color="#0f766e", **style)
    ax.set(title=title, xlabel=xlabel, ylabel="mean absolute error")
    ax.tick_params(axis="x", labelrotation=0 if kind == "line" else 30)
    return svg_of(fig)


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render(runs: pd.DataFrame, preds: pd.DataFrame) -> str:
    if preds.empty:
        body = "<p>No results yet: run <code>ridestream score-batch --input …</code> first.</p>"
        title = "no run"
    else:
        run = runs.iloc[0]
        title = html.escape(str(run["run_id"]))
        preds = preds.assign(abs_error=(preds["value"] - preds["actual"]).abs())
        summary = (preds.groupby(["service", "model_version"])
                   .agg(trips=("trip", "count"), mae=("abs_error", "mean"),
                        mean_predicted=("value", "mean"), mean_actual=("actual", "mean"))
                   .round(3).reset_index())
        sections = []
        for service in SERVICES:
            df = preds[preds["service"] == service]
            if df.empty:
                continue
            by_hour = df.groupby("hour")["abs_error"].mean().reindex(range(24))
            by_borough = df.groupby("pickup_borough")["abs_error"].mean().sort_values()
            sections.append(
                f"<section><h2>{service} <small>({UNITS[service]}, MAE {df['abs_error'].mean():.3f} over "
                f"{len(df):,} trips)</small></h2><div class='charts'>{_scatter(df, service)}"
                f"{_bars(by_hour, f'{service}: error by hour (NYC time)', 'hour', 'line')}"
                f"{_bars(by_borough, f'{service}: error by pickup borough', '')}</div></section>")
        body = (
            f"<p>Run <b>{title}</b> on {html.escape(str(run['input']))}: {int(run['trips']):,} trips "
            f"({html.escape(str(run['cleaning']))}), finished {html.escape(str(run['finished_at']))}.</p>"
            f"<h2>Per model version</h2>{_table(summary)}" + "".join(sections)
        )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ridestream results — {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #111827; }}
h1 {{ margin-bottom: 0.2rem; }} h2 small {{ color: #6b7280; font-weight: normal; font-size: 0.8em; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #d1d5db; padding: 0.3rem 0.7rem; text-align: right; }}
th {{ background: #f3f4f6; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1rem; }} .charts svg {{ max-width: 32rem; height: auto; }}
footer {{ color: #6b7280; margin-top: 2rem; font-size: 0.9em; }}
</style></head>
<body><h1>ridestream batch scoring</h1>{body}
<footer>Generated {generated} by <code>ridestream report</code>.</footer></body></html>
"""
