"""The model registry: the store's versions of each model, and aliases that name them (the MLflow
alias model).

Per model, in the store (:func:`shared.ml.artifacts.model_store`): ``<name>/<version>/`` artifacts,
``<name>/CURRENT`` naming the ``champion`` — the version the fleet serves — and
``<name>/aliases.json`` the other aliases (``{"challenger": "v…", "any-name": "v…"}``). A newly
trained version becomes the ``challenger`` and serves nobody until a deployment or an alias move
says so; in a store with no champion yet it becomes the champion. Writes are atomic (a temporary
file, then ``os.replace``) and alias changes are serialized by a lock on the model's folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.ml.artifacts import (
    ALIASES_FILE,
    CHAMPION,
    ModelError,
    check_artifact,
    checksum,
    model_store,
    read_aliases,
    resolve,
    write_atomic,
)

CHALLENGER = "challenger"
ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_VERSION_ID = re.compile(r"v[0-9a-f]{10}")  # the shape of a trained version id: not an alias name


@dataclass(frozen=True)
class VersionInfo:
    """One version of a model in the store, as the registry lists it."""

    name: str
    version: str
    path: Path
    aliases: tuple[str, ...]
    metadata: dict[str, Any] = field(repr=False)

    @property
    def created(self) -> str | None:
        return self.metadata.get("created")

    @property
    def mae(self) -> float | None:
        """The held-out MAE: the request-time models' ``metrics.mae``; for the dynamic duration
        model, the remaining-time MAE at half way."""
        metrics = self.metadata.get("metrics") or {}
        if "mae" in metrics:
            return metrics["mae"]
        half = (metrics.get("remaining_mae_at") or {}).get("50%") or {}
        return half.get("remaining_mae")

    def checksum_state(self) -> str:
        """``ok`` (the bytes match the metadata's checksum), ``corrupt``, or ``none`` (an older
        artifact without a checksum)."""
        expected = self.metadata.get("checksum")
        if expected is None:
            return "none"
        try:
            return "ok" if checksum(self.path / "model.joblib") == expected else "corrupt"
        except OSError:
            return "corrupt"


def _root(store: Path | str | None) -> Path:
    return Path(store) if store is not None else model_store()


def model_names(store: Path | str | None = None) -> list[str]:
    """The models that have at least one version in the store."""
    root = _root(store)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _version_dirs(d))


def _version_dirs(folder: Path) -> list[Path]:
    return [d for d in folder.iterdir() if d.is_dir() and (d / "metadata.json").is_file()]


def _require_model(name: str, store: Path) -> Path:
    folder = store / name
    if not folder.is_dir() or not _version_dirs(folder):
        known = ", ".join(model_names(store)) or "none"
        raise ModelError(f"no model {name!r} in {store} (models: {known}): see `ridestream models list`")
    return folder


def aliases(name: str, store: Path | str | None = None) -> dict[str, str]:
    """The model's aliases → versions, ``champion`` (from CURRENT) first."""
    root = _root(store)
    _require_model(name, root)
    found = read_aliases(name, root)
    return dict(sorted(found.items(), key=lambda item: (item[0] != CHAMPION, item[0])))


def versions(name: str, store: Path | str | None = None) -> list[VersionInfo]:
    """The model's versions, oldest first (by their ``created`` time, then id)."""
    root = _root(store)
    folder = _require_model(name, root)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases(name, root).items():
        by_version.setdefault(version, []).append(alias)
    found = []
    for path in _version_dirs(folder):
        try:
            metadata = json.loads((path / "metadata.json").read_text())
        except ValueError:
            metadata = {}  # listed all the same: `models list` shows it cannot be loaded
        found.append(VersionInfo(name, path.name, path, tuple(by_version.get(path.name, ())), metadata))
    return sorted(found, key=lambda v: (v.created or "", v.version))


def list_models(store: Path | str | None = None) -> dict[str, list[VersionInfo]]:
    """Every model in the store with its versions."""
    root = _root(store)
    return {name: versions(name, root) for name in model_names(root)}


def resolve_version(name: str, ref: str | None = None, store: Path | str | None = None) -> str:
    """The version id that ``ref`` names now: None or ``champion`` (CURRENT), another alias
    (``challenger``, or ``NAME@ALIAS``), or a version id. Aliases move; a deployment plan should
    carry the id this returns."""
    root = _root(store)
    _require_model(name, root)
    if ref is not None and ("/" in ref or ref.startswith(".")):
        raise ModelError(f"{ref!r} is a path: the registry names versions by id or alias (e.g. {name}@champion)")
    try:
        return resolve(name, ref, root).name
    except ModelError:
        if ref is None:
            raise
        known = ", ".join(v.version for v in versions(name, root))
        named = ", ".join(aliases(name, root)) or "none"
        raise ModelError(f"model {name} has no version or alias {ref!r} in {root} (versions: {known}; "
                         f"aliases: {named})") from None


def check_alias_name(alias: str) -> str:
    if not ALIAS_NAME.fullmatch(alias):
        raise ModelError(f"bad alias name {alias!r}: a lowercase letter, then up to 39 lowercase letters, "
                         "digits, '_' or '-' (e.g. challenger, canary-2)")
    if _VERSION_ID.fullmatch(alias):
        raise ModelError(f"bad alias name {alias!r}: it looks like a version id; choose a name")
    return alias


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One alias change at a time per model (read, change, write aliases.json): a lock on the
    model's folder itself, so the store holds no lock files."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_others(folder: Path, others: dict[str, str]) -> None:
    write_atomic(folder / ALIASES_FILE, json.dumps(dict(sorted(others.items())), indent=2) + "\n")


def _others(name: str, root: Path) -> dict[str, str]:
    return {a: v for a, v in read_aliases(name, root).items() if a != CHAMPION}


def set_alias(name: str, alias: str, ref: str, store: Path | str | None = None) -> str | None:
    """Point ``alias`` at the version ``ref`` names (a version id or another alias); returns the
    version it pointed at before (None if it is new). Moving ``champion`` rewrites CURRENT, after
    :func:`~shared.ml.artifacts.check_artifact` accepts the version, since it is what the fleet
    serves."""
    root = _root(store)
    folder = _require_model(name, root)
    check_alias_name(alias)
    version = resolve_version(name, ref, root)
    with _locked(folder):
        before = read_aliases(name, root).get(alias)
        if alias == CHAMPION:
            check_artifact(folder / version, name)
            write_atomic(folder / "CURRENT", version + "\n")
        else:
            _write_others(folder, {**_others(name, root), alias: version})
    return before


def delete_alias(name: str, alias: str, store: Path | str | None = None) -> str:
    """Remove an alias; returns the version it named. The champion cannot be removed (the fleet
    serves it): move it instead."""
    root = _root(store)
    folder = _require_model(name, root)
    check_alias_name(alias)
    if alias == CHAMPION:
        raise ModelError(f"the champion alias cannot be deleted, the fleet serves it: move it with "
                         f"`ridestream models alias {name} champion VERSION`")
    with _locked(folder):
        others = _others(name, root)
        if alias not in others:
            raise ModelError(f"model {name} has no alias {alias!r} (aliases: "
                             f"{', '.join(aliases(name, root)) or 'none'})")
        version = others.pop(alias)
        _write_others(folder, others)
    return version


def register(name: str, version: str, store: Path | str | None = None, champion: bool = False) -> tuple[str, ...]:
    """Register a version just written to the store (by training): it becomes the ``challenger``
    and the champion stays; with ``champion=True``, or when the model has no champion yet, it
    becomes the champion instead. A version that already is the champion is left as it is.
    Returns the aliases set."""
    root = _root(store)
    folder = _require_model(name, root)
    if not (folder / version / "metadata.json").is_file():
        raise ModelError(f"no {name} model version {version!r} in {root} to register")
    current = read_aliases(name, root).get(CHAMPION)
    if current == version:
        return ()
    if champion or current is None:
        with _locked(folder):
            write_atomic(folder / "CURRENT", version + "\n")
        return (CHAMPION,)
    set_alias(name, CHALLENGER, version, root)
    return (CHALLENGER,)
