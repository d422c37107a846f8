"""Train the four models and write them as versioned artifacts.

* initial duration, tip, cost — request-time models, trained on real trips (the cost model may
  be the meter applied to the initial model's duration, :mod:`shared.ml.cost_model`);
* dynamic duration — from a ride's progress (target: the minutes left), trained on the progress of
  simulated rides plus real training trips, each carrying the initial model's honest
  (out-of-sample) estimate as a feature, as the live service will.

Each model is chosen among gradient-boosting candidates (single models and, for request-time
models, a small ensemble using the zones' typical pace) by MAE on a validation split of the
training data; the held-out test trips are only used by the evaluation.

The artifacts go into the model store and are registered (:func:`shared.ml.registry.register`):
each new version becomes its model's ``challenger`` — or its ``champion`` when asked, or when the
model has none yet. A subset of the models can be trained; the others' champions are what the
subset builds on (the cost and dynamic models on the initial duration model) and is evaluated
beside.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingRegressor, VotingRegressor
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import KFold, cross_val_predict, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline

from shared.data import simulator
from shared.ml.artifacts import (
    MODEL_NAMES,
    TARGETS,
    Model,
    ModelError,
    build_features,
    features_of,
    load_model,
    model_store,
    save_model,
)
from shared.ml.cost_model import CostFromDuration
from shared.ml.features import REQUEST_CATEGORICAL, request_columns
from shared.ml.registry import register
from shared.ml.zone_pace import ZonePace
from training.data import Dataset, load_dataset
from training.evaluate import evaluate
from training.reference import progress_weights, reference_for

Step = Callable[[str], None]


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # empty: the shipped real sample
    simulated: int = 20_000  # simulated rides whose progress trains the dynamic model
    seed: int = 42
    test_fraction: float = 0.2
    progress_points: int = 4  # progress rows sampled per simulated ride


def candidates(name: str, seed: int, zone_pace: ZonePace | None = None,
               duration: Any = None) -> dict[str, Any]:
    """Gradient-boosting candidates; for request-time models also a small ensemble on top of the
    zones' typical pace (absolute loss, and squared and absolute loss on a log target); for the
    cost, given the chosen ``duration`` model, also the meter applied to its median duration."""
    categorical = list(REQUEST_CATEGORICAL) if name != "dynamic_duration" else None
    common = dict(random_state=seed, categorical_features=categorical, early_stopping=True,
                  validation_fraction=0.15, n_iter_no_change=30, max_iter=600)
    small = dict(learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40, **common)
    found: dict[str, Any] = {
        "hgb-absolute-small": HistGradientBoostingRegressor(loss="absolute_error", **small),
        "hgb-absolute": HistGradientBoostingRegressor(loss="absolute_error", learning_rate=0.08, **common),
        "hgb-squared": HistGradientBoostingRegressor(
            loss="squared_error", learning_rate=0.05, l2_regularization=1.0, min_samples_leaf=40, **common),
    }
    if zone_pace is not None:
        def log_target(loss: str, **extra: Any) -> TransformedTargetRegressor:
            return TransformedTargetRegressor(HistGradientBoostingRegressor(loss=loss, **small, **extra),
                                              func=np.log1p, inverse_func=np.expm1)

        found["zone-pace-ensemble"] = make_pipeline(zone_pace, VotingRegressor([
            ("absolute", HistGradientBoostingRegressor(loss="absolute_error", **small)),
            ("log-squared", log_target("squared_error", l2_regularization=1.0)),
            ("log-absolute", log_target("absolute_error")),
        ]))
    if name == "cost" and duration is not None:
        # finer trees than the others: the meter already carries the bulk of the cost
        found["meter-on-duration"] = CostFromDuration(duration=clone(duration), fare=HistGradientBoostingRegressor(
            loss="absolute_error", learning_rate=0.05, **dict(common, max_iter=3000, max_leaf_nodes=31,
                                                              min_samples_leaf=20, max_features=0.5)))
    return found


def fitted_boosters(estimator: Any, prefix: str = "") -> Iterator[tuple[str, HistGradientBoostingRegressor]]:
    """Each fitted booster inside ``estimator`` with the prefix of its parameters (``a__b__``)."""
    if isinstance(estimator, HistGradientBoostingRegressor):
        yield prefix, estimator
    elif isinstance(estimator, Pipeline):
        for step_name, step in estimator.steps:
            yield from fitted_boosters(step, f"{prefix}{step_name}__")
    elif isinstance(estimator, VotingRegressor):
        for (member_name, _), member in zip(estimator.estimators, estimator.estimators_):
            yield from fitted_boosters(member, f"{prefix}{member_name}__")
    elif isinstance(estimator, TransformedTargetRegressor):
        yield from fitted_boosters(estimator.regressor_, f"{prefix}regressor__")
    elif isinstance(estimator, CostFromDuration):
        yield from fitted_boosters(estimator.duration_, f"{prefix}duration__")
        yield from fitted_boosters(estimator.fare_, f"{prefix}fare__")


def best_rounds(fitted: Any) -> dict[str, Any]:
    """Parameters that refit each early-stopped booster with exactly the trees up to its best
    validation score: early stopping keeps the ``n_iter_no_change`` trees after it, which cost
    every prediction (the tip model: 119 trees, best at 89) and add nothing."""
    params: dict[str, Any] = {}
    for prefix, booster in fitted_boosters(fitted):
        if getattr(booster, "validation_score_", None) is not None and len(booster.validation_score_) > 1:
            params[f"{prefix}early_stopping"] = False
            params[f"{prefix}max_iter"] = max(int(np.argmax(booster.validation_score_)), 1)
    return params


def fit(estimator: Any, X: np.ndarray, y: np.ndarray, duration_min: np.ndarray | None) -> Any:
    """``estimator.fit`` on a clone; the trips' durations go to the models that learn from them."""
    if isinstance(estimator, CostFromDuration):
        return clone(estimator).fit(X, y, duration_min=duration_min)
    return clone(estimator).fit(X, y)


def select_and_fit(name: str, X: np.ndarray, y: np.ndarray, seed: int, zone_pace: ZonePace | None = None,
                   duration: Any = None, duration_min: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """Pick the candidate with the lowest validation MAE, then refit it on all of X — first with
    early stopping to find each booster's best number of trees, then with that many on all of X.
    ``duration`` (the chosen duration model) and the trips' ``duration_min`` add the cost's
    meter-on-duration candidate."""
    durations = duration_min if duration_min is not None else np.full(len(y), np.nan)
    X_fit, X_val, y_fit, y_val, d_fit, _ = train_test_split(X, y, durations, test_size=0.2, random_state=seed)
    options = candidates(name, seed, zone_pace, duration if duration_min is not None else None)
    scores = {}
    for label, estimator in options.items():
        scores[label] = float(mean_absolute_error(y_val, fit(estimator, X_fit, y_fit, d_fit).predict(X_val)))
    chosen = min(scores, key=scores.__getitem__)
    rounds = best_rounds(fit(options[chosen], X, y, duration_min))
    final = fit(clone(options[chosen]).set_params(**rounds), X, y, duration_min)
    trees = {prefix.rstrip("_") or "model": booster.n_iter_ for prefix, booster in fitted_boosters(final)}
    return final, {"chosen": chosen, "validation_mae": scores, "trees": trees}


def dynamic_training_rows(ds: Dataset, initial: Any, cfg: TrainConfig) -> pd.DataFrame:
    """Progress rows with the initial estimate each ride would have had."""
    rng = np.random.default_rng(cfg.seed)
    cal = simulator.fit(ds.train)
    frames = []
    if cfg.simulated:
        rides = simulator.simulate(cal, cfg.simulated, seed=cfg.seed)
        prog = simulator.progress(rides, seed=cfg.seed)
        keep = rng.random(len(prog)) < cfg.progress_points / np.maximum(
            np.bincount(prog["ride_index"], minlength=len(rides))[prog["ride_index"]], 1)
        prog = prog[keep]
        estimate = np.maximum(initial.predict(build_features("initial_duration", request_columns(rides))), 0)
        frames.append(prog.assign(
            initial_duration_min=estimate[prog["ride_index"]],
            event_time=rides["started_s"].to_numpy()[prog["ride_index"]] + prog["elapsed_min"] * 60,
        ))
    # real training trips: out-of-fold initial estimates, progress at random points of the ride
    X_train = build_features("initial_duration", request_columns(ds.train))
    oof = cross_val_predict(clone(initial), X_train, ds.train["duration_min"].to_numpy(),
                            cv=KFold(5, shuffle=True, random_state=cfg.seed))
    fractions = rng.uniform(0.05, 0.95, 3)
    real = simulator.progress_at_fractions(ds.train["trip_distance_mi"].to_numpy(),
                                           ds.train["duration_min"].to_numpy(), fractions, seed=cfg.seed)
    pickup_s = request_columns(ds.train)["event_time"]
    frames.append(real.assign(
        initial_duration_min=np.maximum(oof, 0)[real["ride_index"]],
        event_time=pickup_s[real["ride_index"]] + real["elapsed_min"] * 60,
    ))
    return pd.concat(frames, ignore_index=True)


def version_id(name: str, ds: Dataset, cfg: TrainConfig, estimator: Any, depends_on: dict[str, str]) -> str:
    """Content-derived: the same data, configuration, estimator, upstream models and library give
    the same version."""
    key = json.dumps({"name": name, "data": ds.fingerprint, "config": asdict(cfg),
                      "estimator": estimator.get_params(), "depends_on": depends_on,
                      "sklearn": sklearn.__version__}, sort_keys=True, default=str)
    return "v" + hashlib.sha256(key.encode()).hexdigest()[:10]


def chosen_models(models: Iterable[str] | None) -> tuple[str, ...]:
    """The models named (all four when None or empty), in training order; a one-line error for an
    unknown name."""
    named = [m.strip() for m in (models or []) if m.strip()]
    unknown = [m for m in named if m not in MODEL_NAMES]
    if unknown:
        raise ModelError(f"unknown model {unknown[0]!r}: choose from {', '.join(MODEL_NAMES)}")
    order = ("initial_duration", "tip", "cost", "dynamic_duration")
    return tuple(m for m in order if not named or m in named)


def champions_beside(names: tuple[str, ...], store: Path) -> dict[str, Model]:
    """The champions of the models not being trained: a subset builds on them and is evaluated
    beside them, so each must load."""
    beside = {}
    for other in MODEL_NAMES:
        if other in names:
            continue
        try:
            beside[other] = load_model(other, None, store)
        except ModelError as exc:
            raise ModelError(f"training only {', '.join(names)} builds on the other models' champions, "
                             f"but {exc}") from None
    return beside


def train(cfg: TrainConfig, models_dir: Path | None = None, step: Step = lambda _: None,
          models: Iterable[str] | None = None, champion: bool = False) -> dict[str, Path]:
    """Train ``models`` (default all four) on ``cfg`` into the store and register them: each new
    version becomes its model's challenger, or its champion with ``champion=True`` or when it
    has none yet. Returns name → artifact folder."""
    store = models_dir if models_dir is not None else model_store()
    names = chosen_models(models)
    beside = champions_beside(names, store)
    step("loading and cleaning trips")
    ds = load_dataset(cfg.data or None, cfg.seed, cfg.test_fraction)
    X = build_features("initial_duration", request_columns(ds.train))
    pace = ZonePace.from_trips(ds.train["pickup_zone"], ds.train["dropoff_zone"],
                               ds.train["trip_distance_mi"], ds.train["duration_min"])
    fitted: dict[str, tuple[Any, dict[str, Any]]] = {}

    def initial() -> Any:
        return fitted["initial_duration"][0] if "initial_duration" in fitted else beside["initial_duration"].estimator

    for name in ("initial_duration", "tip", "cost"):
        if name not in names:
            continue
        step(f"training {name} on {len(ds.train)} real trips")
        fitted[name] = select_and_fit(name, X, ds.train[TARGETS[name]].to_numpy(float), cfg.seed, pace,
                                      duration=initial() if name == "cost" else None,
                                      duration_min=ds.train["duration_min"].to_numpy(float))
    if "dynamic_duration" in names:
        step(f"simulating {cfg.simulated} rides for the dynamic model")
        rows = dynamic_training_rows(ds, initial(), cfg)
        step(f"training dynamic_duration on {len(rows)} progress points")
        X_progress = build_features("dynamic_duration", rows)
        fitted["dynamic_duration"] = select_and_fit("dynamic_duration", X_progress, rows["remaining_min"].to_numpy(),
                                                    cfg.seed)

    step("evaluating on held-out real trips")
    estimators = {**{n: m.estimator for n, m in beside.items()}, **{n: est for n, (est, _) in fitted.items()}}
    report = evaluate(estimators, ds, cfg.seed)
    paths: dict[str, Path] = {}
    versions: dict[str, str] = {n: m.version for n, m in beside.items()}
    for name, (estimator, selection) in fitted.items():  # initial_duration comes first
        # the dynamic model learnt from the initial model's estimates and the cost model holds a copy
        # of it: a new initial, a new dynamic and cost
        learnt_from_initial = name == "dynamic_duration" or isinstance(estimator, CostFromDuration)
        depends_on = {"initial_duration": versions["initial_duration"]} if learnt_from_initial else {}
        version = versions[name] = version_id(name, ds, cfg, estimator, depends_on)
        metadata = {
            "name": name, "version": version, "target": TARGETS[name],
            "features": list(features_of(name)), "estimator": selection["chosen"],
            "selection": selection, "metrics": report["models"][name], "depends_on": depends_on,
            "training": training_info(ds, cfg),
            "library_versions": library_versions(),
        }
        paths[name] = save_model(estimator, metadata, store, make_current=False)
        dynamic = name == "dynamic_duration"
        reference_for(name, version, estimator, X_progress if dynamic else X, f"training data (fingerprint "
                      f"{ds.fingerprint[:12]})", progress_weights(rows) if dynamic else None).write(paths[name])
        register(name, version, store, champion=champion)
    return paths


def training_info(ds: Dataset, cfg: TrainConfig) -> dict[str, Any]:
    return {"files": [p.name for p in ds.files], "fingerprint": ds.fingerprint, "cleaning": ds.report.summary(),
            "train_trips": len(ds.train), "test_trips": len(ds.test), **asdict(cfg)}


def library_versions() -> dict[str, str]:
    return {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "python": platform.python_version()}
