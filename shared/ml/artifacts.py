"""Versioned model artifacts and the one batch prediction interface the services call.

On disk, in the model store (:func:`model_store`, default ``models/``):
``<name>/<version>/model.joblib`` with ``metadata.json`` beside it (version, checksum of the
model's bytes, training-data fingerprint, library versions, features, metrics);
``<name>/CURRENT`` naming the version the fleet serves (the ``champion`` alias) and
``<name>/aliases.json`` the other aliases. :mod:`shared.ml.registry` lists and moves aliases.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import PROJECT_ROOT
from shared.errors import RidestreamError
from shared.ml.features import (
    PROGRESS_FEATURES,
    PROGRESS_FIELDS,
    REQUEST_FEATURES,
    REQUEST_FIELDS,
    Columns,
    columns_from_events,
    progress_features,
    request_columns,
    request_features,
)
from shared.ml.native import Predict, form_path, load_form

MODELS_DIR = PROJECT_ROOT / "models"  # the default store; the setting RIDESTREAM_MODEL_STORE moves it
CHAMPION = "champion"  # the alias the fleet serves, kept in <name>/CURRENT
ALIASES_FILE = "aliases.json"  # the other aliases: {"challenger": "v…", …}
log = logging.getLogger("ridestream.models")
ModelName = Literal["initial_duration", "dynamic_duration", "tip", "cost"]
MODEL_NAMES: tuple[ModelName, ...] = ("initial_duration", "dynamic_duration", "tip", "cost")
TARGETS: dict[str, str] = {
    "initial_duration": "duration_min", "dynamic_duration": "remaining_min",
    "tip": "tip_amount", "cost": "cost_amount",
}
_KIND = {name: ("progress" if name == "dynamic_duration" else "request") for name in MODEL_NAMES}
_FIELDS = {"request": REQUEST_FIELDS, "progress": PROGRESS_FIELDS}
_FEATURES = {"request": REQUEST_FEATURES, "progress": PROGRESS_FEATURES}
_BUILD = {"request": request_features, "progress": progress_features}


class ModelError(RidestreamError):
    """A model artifact is missing or cannot be used here (corrupt, another scikit-learn, other
    features), or a model, version or alias asked for does not exist."""


class _StoreSetting(BaseSettings):
    """``Settings.model_store`` (shared/kafka/settings.py), read here with the same variable, prefix
    and ``.env`` file: the layers keep ``shared.ml`` from importing ``shared.kafka``, and a model
    load should not fail on an unrelated bad Kafka setting. A test holds the two to agreeing."""

    model_config = SettingsConfigDict(env_prefix="RIDESTREAM_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")
    model_store: Path = MODELS_DIR


def model_store() -> Path:
    """The model store in force: ``RIDESTREAM_MODEL_STORE`` (environment or ``.env``), read at each
    call, else ``models/`` in the repository."""
    return _StoreSetting().model_store


def _store(models_dir: Path | str | None) -> Path:
    return Path(models_dir) if models_dir is not None else model_store()


def features_of(name: str) -> tuple[str, ...]:
    return _FEATURES[_KIND[name]]


def build_features(name: str, cols: Columns) -> np.ndarray:
    return _BUILD[_KIND[name]](cols)


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    estimator: Any
    metadata: dict[str, Any]
    path: Path
    native: Predict | None = field(default=None, compare=False, repr=False)  # see accelerate()
    # called with each predict's feature matrix and predictions (a service's drift counting)
    observers: list[Callable[[np.ndarray, np.ndarray], None]] = field(default_factory=list, compare=False, repr=False)

    def accelerate(self, cache_dir: Path, threads: int = 1) -> bool:
        """Serve from compiled trees (:mod:`shared.ml.compiled`) when they reproduce this model's
        predictions on a probe batch; True if they do. Compiling takes seconds, once per version;
        the serving form it leaves in ``cache_dir`` lets :func:`load_model` skip scikit-learn."""
        if self.native is None:
            from shared.ml.compiled import verified

            native = verified(self.estimator, cached_probe(self.name, cache_dir), cache_dir, threads,
                              key=form_key(self.metadata))
            object.__setattr__(self, "native", native)
        return self.native is not None

    @property
    def fields(self) -> tuple[str, ...]:
        """The event fields this model reads."""
        return _FIELDS[_KIND[self.name]]

    def predict_columns(self, cols: Columns) -> np.ndarray:
        """One vectorized feature build and one ``predict`` for the whole batch; never negative."""
        if len(next(iter(cols.values()))) == 0:
            return np.empty(0)
        predict = self.native or self.estimator.predict
        X = build_features(self.name, cols)
        y = np.maximum(predict(X), 0.0)
        for observe in self.observers:
            observe(X, y)
        return y

    def predict_events(self, events: Sequence[Any], **extra: np.ndarray) -> np.ndarray:
        """Predictions for a batch of validated events. ``extra`` supplies columns the events do
        not carry (the dynamic model's ``initial_duration_min``, remembered from the request)."""
        fields = [f for f in self.fields if f not in extra]
        return self.predict_columns({**columns_from_events(events, fields), **extra})


def probe_features(name: str, rows: int = 1500, seed: int = 0) -> np.ndarray:
    """Feature rows to check a compiled model against scikit-learn: real sample trips, and rows
    that carry every zone and payment type (also codes the training data may never have shown)."""
    from shared.data import simulator
    from shared.data.tlc import sample_trips

    rng = np.random.default_rng(seed)
    trips = sample_trips().head(rows)
    if _KIND[name] == "progress":
        prog = simulator.progress_at_fractions(trips["trip_distance_mi"].to_numpy(), trips["duration_min"].to_numpy(),
                                               np.array([0.1, 0.5, 0.9]), seed=seed)
        initial = trips["duration_min"].to_numpy()[prog["ride_index"]] * rng.uniform(0.6, 1.5, len(prog))
        initial[rng.random(len(prog)) < 0.1] = np.nan  # the service may not know it
        cols = {c: prog[c].to_numpy() for c in ("elapsed_min", "distance_done_mi", "distance_left_mi")}
        cols["event_time"] = np.full(len(prog), 1.55e9) + rng.uniform(0, 7 * 86400, len(prog))
        return progress_features({**cols, "initial_duration_min": initial})
    cols = request_columns(trips)
    n = len(trips)
    cols["pickup_zone"] = np.where(np.arange(n) % 3 == 0, np.arange(n) % 265 + 1, cols["pickup_zone"])
    cols["dropoff_zone"] = np.where(np.arange(n) % 3 == 1, (np.arange(n) * 7) % 265 + 1, cols["dropoff_zone"])
    cols["payment_type"] = np.where(np.arange(n) % 4 == 0, np.arange(n) % 6 + 1, cols["payment_type"])
    return request_features(cols)


_PROBE_TAG = "probe1"  # part of a cached probe's name: bump when probe_features changes


def cached_probe(name: str, cache_dir: Path) -> np.ndarray:
    """:func:`probe_features` (its default rows), kept as ``.npy`` beside the compiled libraries:
    a replica starting with them cached checks its trees without reading and cleaning the sample
    trips again (~12 MB that stay in the process, and part of its start). Named by the model kind,
    its features and the sample's bytes; any probe is as good a check as another, so a stale one
    would weaken nothing, but a new sample or feature list makes a new one."""
    from shared.data.files import SAMPLE_TRIPS

    key = hashlib.sha256("\0".join((_PROBE_TAG, _KIND[name], *features_of(name))).encode()
                         + SAMPLE_TRIPS.read_bytes()).hexdigest()[:16]
    path = Path(cache_dir) / f"probe-{_KIND[name]}-{key}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        probe = probe_features(name)
        try:
            buffer = io.BytesIO()
            np.save(buffer, probe, allow_pickle=False)
            write_atomic(path, buffer.getvalue())
        except OSError as exc:  # a read-only cache: checked all the same, from the sample
            log.info("could not cache the probe batch in %s: %s", cache_dir, exc)
        return probe


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def checksum(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


_FILE_MODE = 0o644


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file so that a reader sees the old bytes or the new ones, never a part: a temporary
    file beside it, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp's 0600 would hide the store from other users (containers)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _metadata_text(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, indent=2, sort_keys=True) + "\n"


def save_model(estimator: Any, metadata: dict[str, Any], models_dir: Path | None = None,
               make_current: bool = True) -> Path:
    """Write an artifact under ``<store>/<name>/<version>/`` with the checksum of its bytes and
    its creation time in its metadata and, by default, point CURRENT (the champion) at it.

    A version already in the store whose bytes match its checksum is kept as it is: a version id
    names its content (the same data, configuration and estimator), and its pickle's bytes can
    differ from one process to the next (string interning) while the model is the same."""
    store = _store(models_dir)
    name, version = metadata["name"], metadata["version"]
    path = store / name / version
    if not _intact(path):
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".model.joblib.", suffix=".tmp", dir=path)
        os.close(fd)
        try:
            import joblib

            joblib.dump(estimator, tmp, compress=3)
            digest = checksum(Path(tmp))
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path / "model.joblib")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        metadata = {"created": _now(), **metadata, "checksum": digest}
        write_atomic(path / "metadata.json", _metadata_text(metadata))
    else:
        log.info("model %s %s is already in %s: kept as it is", name, version, store)
    if make_current:
        write_atomic(store / name / "CURRENT", version + "\n")
    return path


def _intact(path: Path) -> bool:
    """An artifact folder whose model bytes match the checksum in its metadata."""
    try:
        expected = json.loads((path / "metadata.json").read_text()).get("checksum")
        return expected is not None and checksum(path / "model.joblib") == expected
    except (OSError, ValueError, AttributeError):
        return False


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def read_aliases(name: str, models_dir: Path | None = None) -> dict[str, str]:
    """A model's aliases → versions: ``champion`` from CURRENT, the others from aliases.json."""
    folder = _store(models_dir) / name
    found: dict[str, str] = {}
    current = folder / "CURRENT"
    if current.is_file() and current.read_text().strip():
        found[CHAMPION] = current.read_text().strip()
    aliases = folder / ALIASES_FILE
    if aliases.is_file():
        try:
            others = json.loads(aliases.read_text())
        except ValueError as exc:
            raise ModelError(f"{aliases} is not valid JSON ({exc}): fix or delete it") from None
        if not isinstance(others, dict):
            raise ModelError(f"{aliases} should map alias names to versions: fix or delete it")
        found.update({str(k): str(v) for k, v in others.items() if k != CHAMPION})
    return found


def resolve(name: str, version: str | None = None, models_dir: Path | None = None) -> Path:
    """The folder of a model artifact. ``version`` may be None (the champion: CURRENT), a version
    id, an alias (``challenger``, or ``NAME@ALIAS``), or a path to an artifact folder."""
    store = _store(models_dir)
    if version and Path(version).is_dir():
        return Path(version)
    if version is None:
        pointer = store / name / "CURRENT"
        if not pointer.is_file() or not pointer.read_text().strip():
            raise ModelError(f"no current {name} model in {store}: run `ridestream train`")
        version = pointer.read_text().strip()
    elif "@" in version:
        owner, _, alias = version.partition("@")
        if owner and owner != name:
            raise ModelError(f"{version!r} names model {owner}, not {name}: use {name}@{alias or 'ALIAS'}")
        aliases = read_aliases(name, store)
        if alias not in aliases:
            raise ModelError(f"model {name} has no alias {alias!r} in {store} (aliases: "
                             f"{', '.join(sorted(aliases)) or 'none'}): see `ridestream models show {name}`")
        version = aliases[alias]
    elif not (store / name / version / "metadata.json").is_file():
        version = read_aliases(name, store).get(version, version)
    path = store / name / version
    if not (path / "metadata.json").is_file():
        raise ModelError(f"no {name} model version {version!r} in {store}")
    return path


def check_artifact(path: Path | str, name: str | None = None) -> dict[str, Any]:
    """An artifact folder's metadata, once it is safe to load here; else a :class:`ModelError`
    with a one-line reason and what to do. Refused: model bytes that do not match the checksum in
    the metadata (corrupt), another scikit-learn minor version (pickles are not portable across
    them), and a feature list other than what this code builds for the model. An artifact without
    a checksum (written before there were any) is accepted with a warning."""
    path = Path(path)
    try:
        metadata = json.loads((path / "metadata.json").read_text())
    except OSError as exc:
        raise ModelError(f"cannot read {path / 'metadata.json'}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelError(f"{path / 'metadata.json'} is not valid JSON ({exc}): the artifact is corrupt; "
                         "copy it again or retrain with `ridestream train`") from None
    name = name or metadata.get("name") or path.parent.name
    label = f"model {name} {metadata.get('version', path.name)}"
    if metadata.get("name", name) != name:
        raise ModelError(f"{label} at {path} is a {metadata['name']} model, not {name}: check the path or version")
    model_file = path / "model.joblib"
    if not model_file.is_file():
        raise ModelError(f"{label} has no model.joblib in {path}: copy the artifact again or retrain it")
    expected = metadata.get("checksum")
    if expected is None:
        log.warning("%s at %s has no checksum in its metadata (an older artifact): loaded unverified", label, path)
    else:
        actual = checksum(model_file)
        if actual != expected:
            raise ModelError(
                f"{label} is corrupt: model.joblib does not match the checksum in its metadata (sha256 "
                f"{actual.removeprefix('sha256:')[:12]}…, expected {str(expected).removeprefix('sha256:')[:12]}…); "
                f"copy the artifact again or retrain it with `ridestream train`")
    trained_with = metadata.get("library_versions", {}).get("scikit-learn", "unknown")
    here = importlib.metadata.version("scikit-learn")  # not the module: serving may never import it
    if _minor(trained_with) != _minor(here):
        raise ModelError(
            f"{label} was trained with scikit-learn {trained_with}, but this environment has "
            f"{here}: retrain it with `ridestream train`, or install scikit-learn=={trained_with}"
        )
    if name in _KIND:
        built, listed = list(features_of(name)), list(metadata.get("features") or [])
        if listed != built:
            missing = [f for f in built if f not in listed]
            unexpected = [f for f in listed if f not in built]
            detail = "; ".join(part for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(unexpected)}" if unexpected else "",
            ) if part) or "the same names in another order"
            raise ModelError(f"{label} was trained on other features than this code builds for {name} ({detail}): "
                             f"retrain it with `ridestream train`")
    return metadata


def load_model(name: str, version: str | None = None, models_dir: Path | None = None,
               native_cache: Path | None = None, threads: int = 1) -> Model:
    """Load a model — the champion, a version, an alias or an artifact folder (see :func:`resolve`)
    — once :func:`check_artifact` accepts it; any refusal is a one-line :class:`ModelError`.

    With ``native_cache`` (a service's compiled-trees cache) a model whose serving form is cached
    there, and reproduces scikit-learn's predictions on the probe batch, is served from it at once
    without unpickling it: scikit-learn is then imported only if something asks for the estimator."""
    path = resolve(name, version, models_dir)
    metadata = check_artifact(path, name)
    key = form_key(metadata)
    if native_cache is not None and key is not None and form_path(native_cache, key).is_file():
        native = load_form(native_cache, key, cached_probe(name, native_cache), threads)
        if native is not None:
            return Model(metadata["name"], metadata["version"], _Unpickled(path), metadata, path, native=native)
    return Model(metadata["name"], metadata["version"], _unpickle(path), metadata, path)


def load_served(name: str, cache: Path | None, threads: int = 1) -> Model:
    """The champion of ``name`` as a process that serves it right away loads it (the backend, the
    web service): from its serving form in the compiled-trees ``cache`` if one checks out, else
    unpickled, then compiled into that cache; ``cache`` None: scikit-learn's predict as trained.
    (A scoring service loads with :func:`load_model` and compiles in a thread of its own.)"""
    model = load_model(name, native_cache=cache, threads=threads)
    if cache is not None:
        model.accelerate(cache, threads)
    return model


def form_key(metadata: dict[str, Any]) -> str | None:
    """The name of an artifact's serving form in a cache: its model, version and checksum (None
    without a checksum: nothing would tie a form to these bytes)."""
    digest = str(metadata.get("checksum") or "").removeprefix("sha256:")
    return f"{metadata['name']}-{metadata['version']}-{digest[:16]}" if digest else None


def _unpickle(path: Path) -> Any:
    import joblib

    try:
        return joblib.load(path / "model.joblib")
    except Exception as exc:  # a foreign pickle, or one without a checksum that is damaged
        raise ModelError(f"cannot load {path / 'model.joblib'}: {type(exc).__name__}: {exc}") from None


class _Unpickled:
    """The estimator of a model served from its serving form, unpickled (with scikit-learn) the
    first time anything reads one of its attributes — after checking the artifact again, since it
    may have changed since the model was loaded. Not the estimator's type: code that needs the real
    object (isinstance, copies) loads the model without ``native_cache``."""

    def __init__(self, path: Path):
        self._path, self._estimator = path, None
        self._lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("_path", "_estimator", "_lock"):  # copy and pickle probe these
            raise AttributeError(attr)
        with self._lock:
            if self._estimator is None:
                check_artifact(self._path)
                self._estimator = _unpickle(self._path)
        return getattr(self._estimator, attr)
