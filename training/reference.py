"""Drift references of model versions (:mod:`shared.ml.reference`), on their training data.

``ridestream train`` writes one beside each new version from the feature matrix it fitted on.
For a version trained before references existed (the shipped ones), :func:`training_matrix`
rebuilds that matrix with the same code from the same data: the files, seed and test fraction in
its metadata (the files' fingerprint must match, else it refuses), and for the dynamic model the
same simulated and real progress rows with the initial model version it learnt from. The model's
bytes are never touched: the reference is a file of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.data.tlc import SAMPLE_TRIPS
from shared.ml.artifacts import (
    MODEL_NAMES,
    ModelError,
    build_features,
    features_of,
    load_model,
    model_store,
)
from shared.ml.features import request_columns
from shared.ml.reference import REFERENCE_FILE, Reference
from training.data import load_dataset


def reference_for(name: str, version: str, estimator: Any, X: np.ndarray, source: str,
                  weights: np.ndarray | None = None) -> Reference:
    """The reference of a model fitted on ``X``: its features' bins and its predictions' bins."""
    predictions = np.maximum(estimator.predict(X), 0.0)
    return Reference.build(name, version, features_of(name), X, predictions, source, weights)


def progress_weights(rows: pd.DataFrame) -> np.ndarray:
    """The dynamic model's rows weighted as the service sees rides: its training samples a few
    points of each ride, the backend sends a progress event every minute, so a ride weighs its
    duration in minutes (without it, calm traffic showed PSI 0.3–0.5 on elapsed and distance)."""
    return (rows["elapsed_min"] + rows["remaining_min"]).to_numpy(dtype=np.float64)


def training_matrix(metadata: dict[str, Any], store: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The feature matrix a stored version was fitted on, rebuilt from its metadata, and its
    rows' weights (:func:`progress_weights`; None: each row once)."""
    from training.train import (  # train imports this module
        TrainConfig,
        dynamic_training_rows,
    )

    info = metadata.get("training") or {}
    name = metadata["name"]
    if "seed" not in info:
        raise ModelError(f"model {name} {metadata['version']} records no training configuration: "
                         "retrain it with `ridestream train` (which writes its reference)")
    data = list(info.get("data") or [])
    cfg = TrainConfig(data=data, simulated=int(info.get("simulated", 20_000)), seed=int(info["seed"]),
                      test_fraction=float(info.get("test_fraction", 0.2)),
                      progress_points=int(info.get("progress_points", 4)))
    ds = load_dataset(data or [SAMPLE_TRIPS], cfg.seed, cfg.test_fraction)
    if info.get("fingerprint") and ds.fingerprint != info["fingerprint"]:
        raise ModelError(f"model {name} {metadata['version']} was trained on other data than "
                         f"{', '.join(p.name for p in ds.files)} (fingerprints differ): its reference cannot be rebuilt")
    if name != "dynamic_duration":
        return build_features(name, request_columns(ds.train)), None
    initial_version = (metadata.get("depends_on") or {}).get("initial_duration")
    initial = load_model("initial_duration", initial_version, store).estimator
    rows = dynamic_training_rows(ds, initial, cfg)
    return build_features(name, rows), progress_weights(rows)


def write_references(names: Iterable[str] | None = None, store: Path | None = None,
                     force: bool = False) -> dict[str, Path]:
    """Write the missing reference of every version of ``names`` (default: all models) in the
    store; ``force`` rewrites those that exist. Returns "name version" → file written."""
    store = store if store is not None else model_store()
    written: dict[str, Path] = {}
    for name in names or MODEL_NAMES:
        folder = store / name
        for path in sorted(p for p in folder.iterdir() if (p / "metadata.json").is_file()) if folder.is_dir() else []:
            if (path / REFERENCE_FILE).is_file() and not force:
                continue
            model = load_model(name, str(path), store)
            X, weights = training_matrix(model.metadata, store)
            # the same words as `ridestream train` writes: the same data gives the same file
            source = f"training data (fingerprint {model.metadata['training'].get('fingerprint', '?')[:12]})"
            written[f"{name} {model.version}"] = reference_for(name, model.version, model.estimator, X, source,
                                                               weights).write(path)
    return written
