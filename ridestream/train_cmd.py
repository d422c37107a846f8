"""``ridestream train`` and ``ridestream evaluate``: the models and their measured quality."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ridestream.console import out
from shared import PROJECT_ROOT

REPORTS_DIR = PROJECT_ROOT / "reports"


def _store(models_dir: Path | None) -> Path:
    from shared.kafka.settings import load_settings

    return models_dir if models_dir is not None else load_settings().model_store


def train(
    data: list[str] = typer.Option(None, "--data", help="TLC files, folders or globs (CSV/Parquet); default: the shipped real sample"),
    simulated: int = typer.Option(20_000, help="simulated rides whose progress trains the dynamic model"),
    seed: int = typer.Option(42, help="seed of the split, the simulator and the models"),
    models: str = typer.Option(None, "--models", help="train only these, comma-separated (e.g. tip,cost); "
                               "the others' champions are built on. Default: all four"),
    champion: bool = typer.Option(False, "--champion", help="make the new versions champions (what the fleet "
                                  "serves) instead of challengers"),
    worse: bool = typer.Option(False, "--worse", help="a deliberately worse candidate instead: distance-only "
                               "linear regression of the request-time models (seconds)"),
    models_dir: Path = typer.Option(None, "--store", "--models-dir", help="the model store; default "
                                    "RIDESTREAM_MODEL_STORE (models/)"),
) -> None:
    """Train the models on real TLC trips into the model store: each new version becomes its
    model's challenger (its champion with --champion, or when it has none yet)."""
    from shared.ml.artifacts import CHAMPION, MODEL_NAMES, ModelError, read_aliases
    from shared.ml.registry import aliases, versions
    from training.candidates import REQUEST_MODELS, distance_only
    from training.data import load_dataset
    from training.train import TrainConfig, chosen_models
    from training.train import train as train_models

    store = _store(models_dir)
    cfg = TrainConfig(data=list(data or []), simulated=simulated, seed=seed)
    names = chosen_models(models.split(",") if models else None)
    if worse:
        names = names if models else REQUEST_MODELS
        if any(n not in REQUEST_MODELS for n in names):
            raise ModelError(f"--worse makes candidates of the request-time models only: {', '.join(REQUEST_MODELS)}")
        ds = load_dataset(cfg.data or None, cfg.seed, cfg.test_fraction)
        paths = {name: distance_only(name, store, cfg, champion=champion, ds=ds) for name in names}
    else:
        steps = 2 + sum(n != "dynamic_duration" for n in names) + 2 * ("dynamic_duration" in names)
        with Progress(TextColumn("{task.description:<55}"), BarColumn(), TimeElapsedColumn(), console=out) as bar:
            task = bar.add_task("training", total=steps)

            def step(message: str) -> None:
                bar.update(task, advance=1, description=message)

            paths = train_models(cfg, store, step, models=names, champion=champion)
            bar.update(task, completed=steps, description="done")
    table = Table("model", "version", "aliases", "MAE", "champion's MAE", title=f"trained into {store}")
    champions_moved, other_split = False, False
    for name, path in paths.items():
        listed = {v.version: v for v in versions(name, store)}
        new, current = listed[path.name], listed.get(aliases(name, store).get(CHAMPION, ""))
        champions_moved |= CHAMPION in new.aliases
        other_split |= current is not None and _split(current.metadata) != _split(new.metadata)
        table.add_row(name, new.version, ", ".join(new.aliases) or "-", _mae(new.mae),
                      _mae(current.mae) if current is not None else "-")
    out.print(table)
    if other_split:
        out.print("note: MAE on held-out trips of another split than the champion's (other data or --seed); "
                  "compare online with a canary or shadow")
    if champions_moved and all(CHAMPION in read_aliases(n, store) for n in MODEL_NAMES):
        _report(store, REPORTS_DIR)  # the report describes the champions
    elif not champions_moved:
        out.print("the champions stay; promote one with `ridestream models alias NAME champion challenger`")


def _split(metadata: dict) -> tuple:
    training = metadata.get("training") or {}
    return training.get("fingerprint"), training.get("seed"), training.get("test_fraction")


def _mae(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def evaluate(
    models_dir: Path = typer.Option(None, "--store", "--models-dir", help="the model store; default "
                                    "RIDESTREAM_MODEL_STORE (models/)"),
    out_dir: Path = typer.Option(REPORTS_DIR, "--out", help="where evaluation.md and .json go"),
    online: bool = typer.Option(False, "--online", help="instead: judge the live predictions against the rides' "
                                "actuals, publish windowed MAE to rides.model_quality, run rollout analysis"),
    metrics_port: int = typer.Option(0, help="with --online: serve /metrics on this port"),
    window: float = typer.Option(600.0, help="with --online: seconds of completed rides each published MAE covers"),
) -> None:
    """MAE of the champion models on held-out real trips, next to the baselines; with --online,
    the online evaluator and rollout controller, until SIGTERM or Ctrl-C."""
    if online:
        from consumers.rollout import controller_tick
        from ridestream.online_cmd import online as run_online
        from shared.kafka.settings import load_settings

        run_online(metrics_port=metrics_port, window_s=window, on_tick=controller_tick(load_settings()))
        return
    _report(_store(models_dir), out_dir)


def _report(models_dir: Path, out_dir: Path) -> None:
    from rich.markdown import Markdown

    from shared.ml.artifacts import MODEL_NAMES, load_model
    from training.data import load_dataset
    from training.evaluate import evaluate as evaluate_models
    from training.evaluate import write_report

    models = {name: load_model(name, models_dir=models_dir) for name in MODEL_NAMES}
    training = models["initial_duration"].metadata["training"]
    data = training["data"] or None
    ds = load_dataset(data, training["seed"], training["test_fraction"])
    report = evaluate_models({n: m.estimator for n, m in models.items()}, ds, training["seed"])
    md, js = write_report(report, out_dir, {n: m.version for n, m in models.items()})
    out.print(Markdown(md.read_text()))
    out.print(f"wrote {md} and {js}")
