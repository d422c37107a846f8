"""Judge the models on real trips they did not see, against simple baselines.

Request-time models (initial duration, tip, cost): MAE next to a distance-only linear regression
and the training median. Dynamic duration: remaining-time MAE at 25/50/75 % of the ride, next to
"initial estimate − elapsed". Real trip records carry no in-ride progress, so the held-out trips'
progress is laid along their real duration and distance with the simulator's minute-to-minute
speed variation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error

from shared.data import simulator
from shared.ml.artifacts import TARGETS, build_features
from shared.ml.features import request_columns
from training.data import Dataset

PROGRESS_FRACTIONS = (0.25, 0.5, 0.75)
REQUEST_MODELS = ("initial_duration", "tip", "cost")


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return round(float(mean_absolute_error(y, p)), 4)


def evaluate(estimators: dict[str, Any], ds: Dataset, seed: int = 42) -> dict[str, Any]:
    """MAE of each model and its baselines on ``ds.test``."""
    X_test = build_features("initial_duration", request_columns(ds.test))
    dist_train = ds.train[["trip_distance_mi"]].to_numpy()
    dist_test = ds.test[["trip_distance_mi"]].to_numpy()
    report: dict[str, Any] = {"test_trips": len(ds.test), "train_trips": len(ds.train), "models": {}}
    for name in REQUEST_MODELS:
        y_train = ds.train[TARGETS[name]].to_numpy(float)
        y_test = ds.test[TARGETS[name]].to_numpy(float)
        model = _mae(y_test, np.maximum(estimators[name].predict(X_test), 0))
        linear = _mae(y_test, LinearRegression().fit(dist_train, y_train).predict(dist_test))
        median = _mae(y_test, np.full_like(y_test, np.median(y_train)))
        report["models"][name] = {
            "mae": model, "baseline_distance_linear_mae": linear, "baseline_median_mae": median,
            "improvement_vs_distance_linear": round(1 - model / linear, 4),
        }

    initial = np.maximum(estimators["initial_duration"].predict(X_test), 0)
    prog = simulator.progress_at_fractions(ds.test["trip_distance_mi"].to_numpy(),
                                           ds.test["duration_min"].to_numpy(),
                                           np.array(PROGRESS_FRACTIONS), seed=seed)
    ride = prog["ride_index"].to_numpy()
    cols = {
        "elapsed_min": prog["elapsed_min"].to_numpy(), "distance_done_mi": prog["distance_done_mi"].to_numpy(),
        "distance_left_mi": prog["distance_left_mi"].to_numpy(), "initial_duration_min": initial[ride],
        "event_time": request_columns(ds.test)["event_time"][ride] + prog["elapsed_min"].to_numpy() * 60,
    }
    remaining = np.maximum(estimators["dynamic_duration"].predict(build_features("dynamic_duration", cols)), 0)
    baseline = np.maximum(initial[ride] - cols["elapsed_min"], 0)
    truth = prog["remaining_min"].to_numpy()
    at = {}
    for frac in PROGRESS_FRACTIONS:
        sel = np.isclose(prog["fraction"].to_numpy(), frac)
        model, base = _mae(truth[sel], remaining[sel]), _mae(truth[sel], baseline[sel])
        at[f"{int(frac * 100)}%"] = {"remaining_mae": model, "baseline_initial_minus_elapsed_mae": base,
                                     "improvement": round(1 - model / base, 4)}
    report["models"]["dynamic_duration"] = {"remaining_mae_at": at}
    return report


def markdown(report: dict[str, Any], versions: dict[str, str] | None = None) -> str:
    versions = versions or {}
    lines = [
        f"# Model quality on {report['test_trips']} held-out real trips",
        "",
        f"Trained on {report['train_trips']} real trips (NYC TLC); MAE, lower is better.",
        "",
        "| model | version | unit | MAE | distance-only linear | median | vs distance-only |",
        "|---|---|---|---|---|---|---|",
    ]
    units = {"initial_duration": "min", "tip": "USD", "cost": "USD"}
    for name in REQUEST_MODELS:
        m = report["models"][name]
        lines.append(
            f"| {name} | {versions.get(name, '')} | {units[name]} | {m['mae']:.2f} | "
            f"{m['baseline_distance_linear_mae']:.2f} | {m['baseline_median_mae']:.2f} | "
            f"{m['improvement_vs_distance_linear']:+.0%} |"
        )
    lines += [
        "",
        f"Dynamic duration {versions.get('dynamic_duration', '')}: remaining-time MAE (min) during the ride",
        "",
        "| progress | model | initial − elapsed | improvement |",
        "|---|---|---|---|",
    ]
    for point, m in report["models"]["dynamic_duration"]["remaining_mae_at"].items():
        lines.append(f"| {point} | {m['remaining_mae']:.2f} | {m['baseline_initial_minus_elapsed_mae']:.2f} | "
                     f"{m['improvement']:+.0%} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, versions: dict[str, str]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "evaluation.md", out_dir / "evaluation.json"
    md.write_text(markdown(report, versions))
    js.write_text(json.dumps({"versions": versions, **report}, indent=2) + "\n")
    return md, js
