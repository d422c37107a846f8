"""``ridestream train`` and ``ridestream evaluate``: the models and their measured quality."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markdown import Markdown
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ridestream.console import out
from shared import PROJECT_ROOT
from shared.ml.artifacts import MODEL_NAMES, MODELS_DIR, load_model
from training.data import load_dataset
from training.evaluate import evaluate as evaluate_models
from training.evaluate import write_report
from training.train import TrainConfig
from training.train import train as train_models

REPORTS_DIR = PROJECT_ROOT / "reports"
_STEPS = 7


def train(
    data: list[str] = typer.Option(None, "--data", help="TLC files, folders or globs (CSV/Parquet); default: the shipped real sample"),
    simulated: int = typer.Option(20_000, help="simulated rides whose progress trains the dynamic model"),
    seed: int = typer.Option(42, help="seed of the split, the simulator and the models"),
    models_dir: Path = typer.Option(MODELS_DIR, help="where artifacts are written"),
) -> None:
    """Train the four models on real TLC trips and write versioned artifacts."""
    cfg = TrainConfig(data=list(data or []), simulated=simulated, seed=seed)
    with Progress(TextColumn("{task.description:<55}"), BarColumn(), TimeElapsedColumn(), console=out) as bar:
        task = bar.add_task("training", total=_STEPS)

        def step(message: str) -> None:
            bar.update(task, advance=1, description=message)

        paths = train_models(cfg, models_dir, step)
        bar.update(task, completed=_STEPS, description="done")
    for name, path in paths.items():
        out.print(f"  {name:<17} {path}")
    _report(models_dir, REPORTS_DIR)


def evaluate(
    models_dir: Path = typer.Option(MODELS_DIR, help="where the current artifacts are"),
    out_dir: Path = typer.Option(REPORTS_DIR, "--out", help="where evaluation.md and .json go"),
) -> None:
    """MAE of the current models on held-out real trips, next to the baselines."""
    _report(models_dir, out_dir)


def _report(models_dir: Path, out_dir: Path) -> None:
    models = {name: load_model(name, models_dir=models_dir) for name in MODEL_NAMES}
    training = models["initial_duration"].metadata["training"]
    data = training["data"] or None
    ds = load_dataset(data, training["seed"], training["test_fraction"])
    report = evaluate_models({n: m.estimator for n, m in models.items()}, ds, training["seed"])
    md, js = write_report(report, out_dir, {n: m.version for n, m in models.items()})
    out.print(Markdown(md.read_text()))
    out.print(f"wrote {md} and {js}")
