"""Deliberately worse candidates, for tests and demonstrations of a rollout that must fail.

:func:`distance_only` fits a linear regression on the trip distance alone — the evaluation's
distance-only baseline — for a request-time model (initial duration, tip, cost), on the same
training trips as :func:`training.train.train`, and writes it to the store as a proper artifact:
it takes the model's full feature matrix, as the services feed it, and uses only the distance
column. It is registered like any trained version (the challenger). Seconds, not a minute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error
from sklearn.pipeline import Pipeline

from shared.ml.artifacts import TARGETS, ModelError, build_features, features_of, model_store, save_model
from shared.ml.features import request_columns
from shared.ml.registry import register
from training.data import Dataset, load_dataset
from training.reference import reference_for
from training.train import TrainConfig, library_versions, training_info, version_id

REQUEST_MODELS = ("initial_duration", "tip", "cost")
DISTANCE_ONLY = "distance-only-linear"


def distance_only_estimator(name: str) -> Pipeline:
    """Linear regression on the distance column of ``name``'s feature matrix; the other columns
    are dropped."""
    column = features_of(name).index("distance_mi")
    return Pipeline([
        ("distance", ColumnTransformer([("distance_mi", "passthrough", [column])], remainder="drop")),
        ("linear", LinearRegression()),
    ])


def request_metrics(name: str, estimator: object, ds: Dataset) -> dict[str, float]:
    """The evaluation's numbers for a request-time model on the held-out trips."""
    X_test = build_features(name, request_columns(ds.test))
    y_train, y_test = ds.train[TARGETS[name]].to_numpy(float), ds.test[TARGETS[name]].to_numpy(float)
    distance_train, distance_test = ds.train[["trip_distance_mi"]].to_numpy(), ds.test[["trip_distance_mi"]].to_numpy()
    mae = round(float(mean_absolute_error(y_test, np.maximum(estimator.predict(X_test), 0))), 4)
    linear = round(float(mean_absolute_error(
        y_test, LinearRegression().fit(distance_train, y_train).predict(distance_test))), 4)
    median = round(float(mean_absolute_error(y_test, np.full_like(y_test, np.median(y_train)))), 4)
    return {"mae": mae, "baseline_distance_linear_mae": linear, "baseline_median_mae": median,
            "improvement_vs_distance_linear": round(1 - mae / linear, 4)}


def distance_only(name: str, store: Path | None = None, cfg: TrainConfig | None = None,
                  champion: bool = False, ds: Dataset | None = None) -> Path:
    """Fit and store the distance-only candidate of a request-time model; it becomes the
    challenger (the champion with ``champion=True`` or in a store without one). Returns its
    artifact folder."""
    if name not in REQUEST_MODELS:
        raise ModelError(f"no distance-only candidate for {name}: only for {', '.join(REQUEST_MODELS)}")
    cfg = cfg or TrainConfig()
    ds = ds or load_dataset(cfg.data or None, cfg.seed, cfg.test_fraction)
    X = build_features(name, request_columns(ds.train))
    estimator = distance_only_estimator(name).fit(X, ds.train[TARGETS[name]].to_numpy(float))
    version = version_id(name, ds, cfg, estimator, {})
    metadata = {
        "name": name, "version": version, "target": TARGETS[name], "features": list(features_of(name)),
        "estimator": DISTANCE_ONLY, "selection": {"chosen": DISTANCE_ONLY, "purpose": "a deliberately worse candidate"},
        "metrics": request_metrics(name, estimator, ds), "depends_on": {},
        "training": training_info(ds, cfg), "library_versions": library_versions(),
    }
    store = store if store is not None else model_store()
    path = save_model(estimator, metadata, store, make_current=False)
    reference_for(name, version, estimator, X, f"training data (fingerprint {ds.fingerprint[:12]})").write(path)
    register(name, version, store, champion=champion)
    return path
