"""Versioned model artifacts and the one batch prediction interface the services call.

On disk: ``models/<name>/<version>/model.joblib`` with ``metadata.json`` beside it (version,
training-data fingerprint, library versions, features, metrics), and ``models/<name>/CURRENT``
naming the version in use.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import sklearn

from shared import PROJECT_ROOT
from shared.data import simulator
from shared.data.tlc import sample_trips
from shared.errors import RidestreamError
from shared.ml.compiled import Predict, verified
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

MODELS_DIR = PROJECT_ROOT / "models"
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
    """A model artifact is missing or cannot be used here."""


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

    def accelerate(self, cache_dir: Path, threads: int = 1) -> bool:
        """Serve from compiled trees (:mod:`shared.ml.compiled`) when they reproduce this model's
        predictions on a probe batch; True if they do. Compiling takes seconds, once per version."""
        if self.native is None:
            native = verified(self.estimator, probe_features(self.name), cache_dir, threads)
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
        return np.maximum(predict(build_features(self.name, cols)), 0.0)

    def predict_events(self, events: Sequence[Any], **extra: np.ndarray) -> np.ndarray:
        """Predictions for a batch of validated events. ``extra`` supplies columns the events do
        not carry (the dynamic model's ``initial_duration_min``, remembered from the request)."""
        fields = [f for f in self.fields if f not in extra]
        return self.predict_columns({**columns_from_events(events, fields), **extra})


def probe_features(name: str, rows: int = 1500, seed: int = 0) -> np.ndarray:
    """Feature rows to check a compiled model against scikit-learn: real sample trips, and rows
    that carry every zone and payment type (also codes the training data may never have shown)."""
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


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def save_model(estimator: Any, metadata: dict[str, Any], models_dir: Path = MODELS_DIR,
               make_current: bool = True) -> Path:
    """Write an artifact under ``models_dir/<name>/<version>/`` and, by default, point CURRENT at it."""
    name, version = metadata["name"], metadata["version"]
    path = models_dir / name / version
    path.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, path / "model.joblib", compress=3)
    (path / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    if make_current:
        (models_dir / name / "CURRENT").write_text(version + "\n")
    return path


def resolve(name: str, version: str | None = None, models_dir: Path = MODELS_DIR) -> Path:
    """The directory of a model: ``version`` may be a version id or a path to an artifact folder."""
    if version and Path(version).is_dir():
        return Path(version)
    if version is None:
        pointer = models_dir / name / "CURRENT"
        if not pointer.is_file():
            raise ModelError(f"no current {name} model in {models_dir}: run `ridestream train`")
        version = pointer.read_text().strip()
    path = models_dir / name / version
    if not (path / "metadata.json").is_file():
        raise ModelError(f"no {name} model version {version!r} in {models_dir}")
    return path


def load_model(name: str, version: str | None = None, models_dir: Path = MODELS_DIR) -> Model:
    """Load a model, refusing one trained with another scikit-learn minor version (pickles are
    not portable across them) with a one-line message saying what to do."""
    path = resolve(name, version, models_dir)
    metadata = json.loads((path / "metadata.json").read_text())
    trained_with = metadata.get("library_versions", {}).get("scikit-learn", "unknown")
    if _minor(trained_with) != _minor(sklearn.__version__):
        raise ModelError(
            f"model {metadata.get('name', name)} {metadata.get('version', '?')} was trained with "
            f"scikit-learn {trained_with}, but this environment has {sklearn.__version__}: retrain it "
            f"with `ridestream train`, or install scikit-learn=={trained_with}"
        )
    try:
        estimator = joblib.load(path / "model.joblib")
    except Exception as exc:  # a corrupt or foreign pickle
        raise ModelError(f"cannot load {path / 'model.joblib'}: {type(exc).__name__}: {exc}") from None
    return Model(metadata["name"], metadata["version"], estimator, metadata, path)
