"""Artifacts, the batch prediction interface, and the quality gates on held-out real trips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from shared.contract.events import RideProgress, RideRequested
from shared.ml.artifacts import MODEL_NAMES, MODELS_DIR, ModelError, load_model, save_model
from shared.ml.features import columns_from_events
from training.data import load_dataset
from training.evaluate import evaluate


@pytest.fixture(scope="module")
def models():
    return {name: load_model(name) for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def report(models):
    training = models["initial_duration"].metadata["training"]
    ds = load_dataset(None, training["seed"], training["test_fraction"])
    return evaluate({n: m.estimator for n, m in models.items()}, ds, training["seed"])


def requests(n: int) -> list[RideRequested]:
    rng = np.random.default_rng(0)
    return [
        RideRequested.model_validate({
            "event_id": f"e{i}", "ride_id": f"r{i}", "event_time": f"2019-03-0{1 + i % 7}T{i % 24:02d}:10:00Z",
            "pickup_zone": int(rng.integers(1, 264)), "dropoff_zone": int(rng.integers(1, 264)),
            "trip_distance_mi": float(rng.uniform(0.3, 15)), "passenger_count": int(rng.integers(0, 7)),
            "payment_type": int(rng.integers(1, 5)), "service": "green" if i % 5 == 0 else "yellow",
        }, strict=False)
        for i in range(n)
    ]


def test_committed_models_load_with_complete_metadata(models):
    for name, model in models.items():
        meta = model.metadata
        assert meta["name"] == name and meta["version"] == model.version
        assert set(meta) >= {"target", "features", "training", "library_versions", "metrics", "selection"}
        assert len(meta["training"]["fingerprint"]) == 64


def test_one_predict_call_per_batch(models):
    model = models["tip"]
    calls = []

    class Counting:
        def predict(self, X):
            calls.append(len(X))
            return model.estimator.predict(X)

    counted = type(model)(model.name, model.version, Counting(), model.metadata, model.path)
    batch = requests(500)
    out = counted.predict_events(batch)
    assert calls == [500] and out.shape == (500,) and (out >= 0).all()
    np.testing.assert_allclose(out, model.predict_columns(columns_from_events(batch, model.fields)))


def test_columns_come_out_of_either_kind_of_event_with_missing_values_as_nan():
    from shared.contract import fast_events
    from shared.contract.codec import encode_dict

    contract = requests(3)
    contract[1] = contract[1].model_copy(update={"initial_duration_min": 12.5})
    fast = [fast_events.decode(encode_dict(e.model_dump(mode="json"))) for e in contract]
    fields = ("trip_distance_mi", "initial_duration_min", "service", "pickup_zone", "event_time")
    for events in (contract, fast, [fast[0], contract[1], fast[2]]):
        cols = columns_from_events(events, fields)
        assert list(cols) == list(fields)
        np.testing.assert_array_equal(cols["trip_distance_mi"], [e.trip_distance_mi for e in contract])
        np.testing.assert_array_equal(cols["initial_duration_min"], [np.nan, 12.5, np.nan])
        np.testing.assert_array_equal(cols["service"], [e.service == "green" for e in contract])
        np.testing.assert_array_equal(cols["pickup_zone"], [e.pickup_zone for e in contract])
        np.testing.assert_array_equal(cols["event_time"], [e.event_time.timestamp() for e in contract])
    # a field these events do not carry at all is NaN too
    np.testing.assert_array_equal(columns_from_events(fast, ["elapsed_min", "pickup_zone"])["elapsed_min"], [np.nan] * 3)
    assert columns_from_events([], fields)["trip_distance_mi"].shape == (0,)


def test_predictions_make_sense(models):
    batch = requests(300)
    cash = np.array([e.payment_type == 2 for e in batch])
    tips = models["tip"].predict_events(batch)
    assert tips[cash].mean() < 0.2 < tips[~cash].mean()  # cash tips are never recorded
    durations = models["initial_duration"].predict_events(batch)
    distance = np.array([e.trip_distance_mi for e in batch])
    assert np.corrcoef(distance, durations)[0, 1] > 0.7
    progress = [RideProgress.model_validate({"event_id": "p", "ride_id": "r", "event_time": "2019-03-05T13:00:00Z",
                                             "elapsed_min": 10.0, "distance_done_mi": d, "distance_left_mi": 2.0},
                                            strict=False) for d in (0.5, 2.0, 6.0)]
    remaining = models["dynamic_duration"].predict_events(progress, initial_duration_min=np.full(3, 20.0))
    assert remaining[0] > remaining[1] > remaining[2]  # the faster so far, the sooner done
    unknown = models["dynamic_duration"].predict_events(progress, initial_duration_min=np.full(3, np.nan))
    assert np.isfinite(unknown).all()


def test_empty_batch(models):
    assert models["cost"].predict_events([]).shape == (0,)


def test_artifact_round_trip_and_current_pointer(models, tmp_path):
    tip = models["tip"]
    meta = {**tip.metadata, "version": "vtest"}
    path = save_model(tip.estimator, meta, tmp_path)
    assert (tmp_path / "tip" / "CURRENT").read_text().strip() == "vtest"
    loaded = load_model("tip", models_dir=tmp_path)
    assert loaded.version == "vtest" and loaded.path == path
    batch = requests(50)
    np.testing.assert_array_equal(loaded.predict_events(batch), tip.predict_events(batch))
    assert load_model("tip", str(path)).version == "vtest"  # a folder works as --model too


def test_incompatible_scikit_learn_is_a_clear_error(models, tmp_path):
    src = models["cost"].path
    dst = tmp_path / "cost" / "vold"
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["library_versions"]["scikit-learn"] = "1.2.2"
    (dst / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"trained with scikit-learn 1\.2\.2, but this environment has .*ridestream train"):
        load_model("cost", "vold", tmp_path)


def test_missing_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="no current tip model .* run `ridestream train`"):
        load_model("tip", models_dir=tmp_path)
    with pytest.raises(ModelError, match="no tip model version 'v0'"):
        load_model("tip", "v0", MODELS_DIR)


def test_tip_beats_the_distance_only_baseline_by_30_percent(report):
    assert report["models"]["tip"]["improvement_vs_distance_linear"] >= 0.30


def test_initial_duration_beats_the_distance_only_baseline_by_30_percent(report):
    assert report["models"]["initial_duration"]["improvement_vs_distance_linear"] >= 0.30


def test_cost_beats_the_distance_only_baseline_by_30_percent(report):
    assert report["models"]["cost"]["improvement_vs_distance_linear"] >= 0.30


def test_every_request_model_beats_both_baselines(report):
    for name in ("initial_duration", "tip", "cost"):
        m = report["models"][name]
        assert m["mae"] < m["baseline_distance_linear_mae"] and m["mae"] < m["baseline_median_mae"]


def test_dynamic_duration_cuts_remaining_time_error_at_half_way_by_40_percent(report):
    at = report["models"]["dynamic_duration"]["remaining_mae_at"]
    assert at["50%"]["improvement"] >= 0.40
    assert at["25%"]["remaining_mae"] > at["50%"]["remaining_mae"] > at["75%"]["remaining_mae"]


@pytest.mark.slow
def test_train_reproduces_the_committed_models_from_the_seed(models, tmp_path):
    from shared.ml.artifacts import check_artifact
    from shared.ml.registry import aliases
    from training.train import TrainConfig, train

    paths = train(TrainConfig(), tmp_path)
    batch = requests(200)
    for name, path in paths.items():
        assert path.name == models[name].version
        assert aliases(name, tmp_path) == {"champion": path.name}  # a fresh store: champions, no challenger
        assert check_artifact(path)["checksum"].startswith("sha256:")
        # train writes the drift reference; the committed one (written by `ridestream models reference`
        # from the recorded data) agrees with it to 1e-4 — some edges and shares differ in the 5th-6th
        # digit between the two paths (not explained yet); PSI compares shares of 0.1 with 0.25 thresholds
        assert _close(json.loads((path / "reference.json").read_text()),
                      json.loads((models[name].path / "reference.json").read_text())), name
        retrained = load_model(name, models_dir=tmp_path)
        if name == "dynamic_duration":
            continue
        np.testing.assert_allclose(retrained.predict_events(batch), models[name].predict_events(batch))


def _close(a, b, tol: float = 1e-4) -> bool:
    """Two JSON documents with the same shape and strings, their numbers equal within ``tol``
    (relative or absolute)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b
