"""``ridestream models list|show|alias``: the model registry — each model's versions in the store
and the aliases that name them (``champion``, what the fleet serves; ``challenger``; any name)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.table import Table

from ridestream.console import out
from shared.errors import RidestreamError

if TYPE_CHECKING:  # annotations only: the command line imports these when a command runs
    from shared.ml.registry import VersionInfo

app = typer.Typer(help="The model registry: versions and aliases (champion, challenger, …) in the model store.",
                  no_args_is_help=True)
_STORE_HELP = "the model store; default RIDESTREAM_MODEL_STORE (models/)"
_CHECKSUM = {"ok": "[green]ok[/]", "none": "[yellow]none[/]", "corrupt": "[red]corrupt[/]"}


def _store(store: Path | None) -> Path:
    from shared.kafka.settings import load_settings

    return store if store is not None else load_settings().model_store


def _mae(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _aliases(v: VersionInfo) -> str:
    from shared.ml.artifacts import CHAMPION

    return ", ".join(f"[bold]{a}[/]" if a == CHAMPION else a for a in v.aliases) or "-"


@app.command("list")
def list_(store: Path = typer.Option(None, "--store", help=_STORE_HELP)) -> None:
    """Every model's versions: aliases, held-out MAE, when created, whether the bytes match the checksum."""
    from shared.ml.registry import list_models

    root = _store(store)
    found = list_models(root)
    if not found:
        out.print(f"no models in {root}: train them with `ridestream train`")
        return
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title=f"models in {root}")
    for header in ("model", "version", "MAE", "created", "checksum"):
        table.add_column(header, no_wrap=True)
    table.add_column("aliases", overflow="fold")
    for name, listed in found.items():
        for n, v in enumerate(listed):
            created = (v.created or "-")[:10]  # the day; `models show` has the time
            table.add_row(name if n == 0 else "", v.version, _mae(v.mae), created, _CHECKSUM[v.checksum_state()],
                          _aliases(v))
    out.print(table)
    out.print("MAE on held-out real trips (dynamic_duration: the time left, at half way)")


@app.command()
def show(name: str = typer.Argument(..., metavar="NAME", help="initial_duration, dynamic_duration, tip or cost"),
         store: Path = typer.Option(None, "--store", help=_STORE_HELP)) -> None:
    """One model: its aliases, and each version's metrics and training."""
    from shared.ml.registry import aliases, versions

    root = _store(store)
    listed = versions(name, root)
    out.print(f"[bold]{name}[/] in {root}")
    out.print("aliases: " + (", ".join(f"{a} → {v}" for a, v in aliases(name, root).items()) or "none"))
    for v in listed:
        meta, training = v.metadata, v.metadata.get("training") or {}
        metrics = meta.get("metrics") or {}
        table = Table(show_header=False, box=None, padding=(0, 2), title_justify="left",
                      title=f"{v.version}  {_aliases(v) if v.aliases else ''}")
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        table.add_row("created", v.created or "-")
        table.add_row("estimator", str(meta.get("estimator", "?")))
        if "mae" in metrics:
            table.add_row("MAE", f"{_mae(metrics['mae'])} (distance-only {_mae(metrics.get('baseline_distance_linear_mae'))}, "
                          f"median {_mae(metrics.get('baseline_median_mae'))})")
        for point, m in (metrics.get("remaining_mae_at") or {}).items():
            table.add_row(f"MAE at {point}", f"{_mae(m.get('remaining_mae'))} (initial − elapsed "
                          f"{_mae(m.get('baseline_initial_minus_elapsed_mae'))})")
        if training:
            table.add_row("trained on", f"{training.get('train_trips', '?')} trips of {', '.join(training.get('files', []))}"
                          f" (seed {training.get('seed', '?')}, {training.get('test_trips', '?')} held out)")
        trees = (meta.get("selection") or {}).get("trees")
        if trees:
            table.add_row("trees", ", ".join(f"{k} {t}" for k, t in trees.items()))
        if meta.get("depends_on"):
            table.add_row("built on", ", ".join(f"{k} {d}" for k, d in meta["depends_on"].items()))
        libraries = meta.get("library_versions") or {}
        table.add_row("libraries", ", ".join(f"{k} {d}" for k, d in libraries.items()) or "-")
        table.add_row("checksum", f"{_CHECKSUM[v.checksum_state()]} {meta.get('checksum', '')}")
        out.print(table)


@app.command()
def alias(
    name: str = typer.Argument(..., metavar="NAME", help="the model, e.g. tip"),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="champion, challenger or any name: a lowercase "
                                     "letter, then lowercase letters, digits, _ or -"),
    version: str = typer.Argument(None, metavar="VERSION", help="a version id, or an alias naming it (e.g. challenger)"),
    delete: bool = typer.Option(False, "--delete", help="remove the alias instead (not champion)"),
    store: Path = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """Point an alias at a version, or move it; moving champion rewrites the model's CURRENT, the
    version the fleet serves, once the version passes the artifact checks."""
    from shared.ml.registry import check_alias_name, delete_alias, resolve_version, set_alias

    root = _store(store)
    if delete:
        if version is not None:
            raise RidestreamError(f"--delete takes no VERSION: `ridestream models alias {name} {alias_name} --delete`")
        was = delete_alias(name, alias_name, root)
        out.print(f"{name}: {alias_name} deleted (it named {was})")
        return
    if version is None:
        check_alias_name(alias_name)
        raise RidestreamError(f"which version should {alias_name} name? `ridestream models alias {name} {alias_name} "
                              f"VERSION` (or --delete)")
    before = set_alias(name, alias_name, version, root)
    now = resolve_version(name, f"{name}@{alias_name}", root)
    if before == now:
        out.print(f"{name}: {alias_name} already names {now}")
    else:
        out.print(f"{name}: {alias_name} → {now}" + (f" (was {before})" if before else ""))


@app.command()
def reference(
    names: list[str] = typer.Argument(None, metavar="[NAME]...", help="models (default: all four)"),
    force: bool = typer.Option(False, "--force", help="rewrite references that exist"),
    store: Path = typer.Option(None, "--store", help=_STORE_HELP),
) -> None:
    """Write the drift reference (reference.json: each feature's bins on the training data) of every
    version without one, rebuilding its training data from its metadata; model bytes are untouched."""
    from shared.ml.artifacts import MODEL_NAMES
    from training.reference import write_references

    unknown = [n for n in names or [] if n not in MODEL_NAMES]
    if unknown:
        raise RidestreamError(f"unknown model {unknown[0]!r}: choose from {', '.join(MODEL_NAMES)}")
    written = write_references(names or None, _store(store), force=force)
    for label, path in written.items():
        out.print(f"{label}: wrote {path}")
    if not written:
        out.print("every version already has its reference (--force rewrites them)")
