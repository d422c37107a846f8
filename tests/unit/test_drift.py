"""Drift: reference bins, PSI and Wasserstein, the vectorised counting of a service, its window,
what it exports, and the simulator's drift knob — pure, no broker."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumers.drift import PENDING_ROWS, SLOTS, DriftMonitor, ModelDrift
from shared.data import simulator
from shared.data.tlc import sample_trips
from shared.data.zones import airport_flags
from shared.ml.artifacts import MODEL_NAMES, Model, build_features, load_model
from shared.ml.features import request_columns
from shared.ml.reference import (
    PREDICTION,
    REFERENCE_FILE,
    Reference,
    categorical_bins,
    numeric_bins,
    psi,
    read_reference,
    wasserstein,
)


@pytest.fixture(scope="module")
def calibration() -> simulator.Calibration:
    return simulator.fit(sample_trips())


def fresh(model: Model) -> Model:
    """The same artifact with observers of its own."""
    return Model(model.name, model.version, model.estimator, model.metadata, model.path)


def test_numeric_bins_are_deciles_with_a_missing_bin():
    x = np.arange(1000, dtype=float)
    bins = numeric_bins("distance_mi", x)
    assert len(bins.edges) == 9 and bins.bins == 11
    assert np.allclose(bins.fractions[:10], 0.1, atol=0.002) and bins.fractions[10] == 0
    idx = bins.index(np.array([-5.0, 0.0, 500.0, 1e9, np.nan]))
    assert idx.tolist() == [0, 0, 5, 9, 10]
    assert numeric_bins("x", np.ones(50)).bins == 3  # ties merged: one edge


def test_categorical_bins_keep_busy_zones_and_put_the_rest_in_other():
    zones = np.concatenate([np.full(900, 161.0), np.full(90, 237.0), np.arange(1, 11, dtype=float)])
    bins = categorical_bins("pickup_zone", zones)
    assert bins.edges.tolist() == [161.0, 237.0]
    assert bins.index(np.array([161.0, 237.0, 5.0, np.nan])).tolist() == [0, 1, 2, 2]
    assert bins.fractions.tolist() == pytest.approx([0.9, 0.09, 0.01])


def test_psi_is_zero_on_the_same_shares_and_large_on_a_shift():
    ref = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(ref, np.array([250, 250, 250, 250])) == pytest.approx(0.0)
    assert psi(ref, np.array([240, 260, 250, 250])) < 0.01
    assert psi(ref, np.array([700, 100, 100, 100])) > 0.25
    assert psi(ref, np.zeros(4)) == 0.0  # nothing counted: no drift to speak of


def test_wasserstein_is_in_training_standard_deviations():
    rng = np.random.default_rng(0)
    bins = numeric_bins("d", rng.normal(0, 2, 20_000))
    assert wasserstein(bins, rng.normal(0, 2, 20_000)) < 0.05
    assert wasserstein(bins, rng.normal(2, 2, 20_000)) == pytest.approx(1.0, abs=0.05)  # shifted by one σ
    assert wasserstein(categorical_bins("payment_type", np.ones(10)), np.ones(3)) is None


def test_every_shipped_model_has_its_reference_on_its_training_data():
    for name in MODEL_NAMES:
        model = load_model(name)
        ref = read_reference(model.path)
        assert ref is not None and ref.version == model.version
        assert list(ref.features) == [*model.metadata["features"], PREDICTION]
        if name != "dynamic_duration":
            assert ref.rows == model.metadata["training"]["train_trips"]
        assert all(abs(b.fractions.sum() - 1) < 1e-3 for b in ref.features.values())


def test_a_missing_or_broken_reference_turns_drift_off_with_one_log_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ridestream.drift"):
        assert read_reference(tmp_path) is None
        (tmp_path / REFERENCE_FILE).write_text("{not json")
        assert read_reference(tmp_path) is None
    assert len(caplog.records) == 2 and "drift is off" in caplog.text


def test_counting_matches_the_reference_bins_one_by_one_and_the_window_ages_out(calibration):
    model = fresh(load_model("tip"))
    ref = read_reference(model.path)
    now = [1000.0]
    drift = ModelDrift(ref, model.metadata["features"], window_s=100, clock=lambda: now[0])
    assert "hour" not in [b.name for _, b in drift.columns]  # calendar features are not watched live
    cols = request_columns(simulator.simulate(calibration, 3000, seed=4))
    X = build_features("tip", cols)
    X[0, model.metadata["features"].index("payment_type")] = np.nan  # an odd value lands in "other"
    X[1, model.metadata["features"].index("passenger_count")] = 99
    y = model.predict_columns(cols)
    drift.observe(X[:1000], y[:1000])
    drift.observe(X[1000:], y[1000:])
    assert drift.rows.sum() == 0  # kept, not yet counted (fewer than PENDING_ROWS)
    drift.count_pending()
    counts = drift.counts.sum(axis=0)
    for i, (column, bins) in enumerate(drift.columns):
        expected = np.bincount(bins.index(y if column < 0 else X[:, column]), minlength=bins.bins)
        assert counts[drift.offsets[i]:drift.offsets[i + 1]].tolist() == expected.tolist(), bins.name
    rows, by_feature = drift.window()
    assert rows == 3000 and max(by_feature.values()) < 0.25  # the simulator's traffic looks like training
    now[0] += 100 / SLOTS * 3
    assert drift.window()[0] == 3000
    now[0] += 100
    assert drift.window() == (0, {f: 0.0 for f in by_feature})


def test_rows_kept_for_counting_are_counted_when_enough_wait_or_at_a_scrape(calibration):
    model = fresh(load_model("tip"))
    drift = ModelDrift(read_reference(model.path), model.metadata["features"], window_s=100)
    cols = request_columns(simulator.simulate(calibration, PENDING_ROWS + 10, seed=5))
    X, y = build_features("tip", cols), model.predict_columns(cols)
    drift.observe(X[:10], y[:10])
    assert drift.rows.sum() == 0
    assert drift.window()[0] == 10  # a scrape counts what waits
    drift.observe(X[10:20], y[10:20])
    drift.observe(X[20:], y[20:])  # PENDING_ROWS reached: counted at once
    assert drift.rows.sum() == PENDING_ROWS + 10 and drift.histogram.sum() == PENDING_ROWS + 10


def test_the_monitor_counts_through_the_models_observers_and_exports_per_version(calibration, tmp_path, caplog):
    registry = CollectorRegistry()
    monitor = DriftMonitor("tip", registry, window_s=60)
    model = fresh(load_model("tip"))
    without = tmp_path / "tip" / "vnoref"
    without.mkdir(parents=True)
    bare = Model("tip", "vnoref", model.estimator, {**model.metadata, "version": "vnoref"}, without)
    with caplog.at_level(logging.INFO, logger="ridestream.drift"):
        monitor.watch([model, bare])
        monitor.watch([model, bare])  # a plan swap shows them again: counted once, logged once
    assert caplog.text.count("drift is off") == 1 and len(model.observers) == 1 and not bare.observers
    rides = simulator.simulate(calibration, 2000, seed=5, drift="airport-surge")
    model.predict_columns(request_columns(rides))
    text = generate_latest(registry).decode()
    psi_lines = [line for line in text.splitlines() if line.startswith("ridestream_feature_psi{")]
    assert all('service="tip"' in line and f'version="{model.version}"' in line for line in psi_lines)
    shifted = {json.loads(line.rsplit(" ", 1)[1]) for line in psi_lines if 'feature="pickup_airport"' in line}
    assert shifted and min(shifted) > 0.25
    assert f'ridestream_drift_window_rows{{model="tip",service="tip",version="{model.version}"}} 2000.0' in text
    assert f'ridestream_prediction_value_count{{model="tip",service="tip",version="{model.version}"}} 2000.0' in text
    assert 'ridestream_model_trained_mae{model="tip",service="tip",version="vnoref"}' in text
    monitor.close()
    assert not model.observers


@pytest.mark.parametrize("drift", sorted(simulator.DRIFTS))
def test_each_drift_shifts_the_mix_along_what_the_models_see(calibration, drift):
    base = simulator.simulate(calibration, 4000, seed=2)
    moved = simulator.simulate(calibration, 4000, seed=2, drift=drift)
    airports = airport_flags()
    if drift == "airport-surge":
        def share(rides):
            return (airports[rides["pickup_zone"]] | airports[rides["dropoff_zone"]]).mean()
        assert share(moved) > 0.4 and share(base) < 0.1
    elif drift == "long-trips":
        assert moved["trip_distance_mi"].median() > 2 * base["trip_distance_mi"].median()
    elif drift == "cash":
        assert (moved["payment_type"] == 2).mean() > 0.6 and (base["payment_type"] == 2).mean() < 0.4
    elif drift == "night":
        def night(rides):  # the request hours, local (the week of 2019-03-04 springs forward an hour)
            return np.isin(build_features("tip", request_columns(rides))[:, 8], simulator.NIGHT_HOURS).mean()
        assert night(moved) > 0.95 and night(base) < 0.3


def test_without_the_knob_the_draws_are_those_of_before(calibration):
    rng = np.random.default_rng(7)
    drawn = calibration.templates.iloc[rng.integers(0, len(calibration.templates), 50)]
    rides = simulator.simulate(calibration, 50, seed=7)
    assert rides["pickup_zone"].tolist() == drawn["pickup_zone"].tolist()


def test_reference_round_trips_through_json(tmp_path):
    X = np.column_stack([np.arange(100.0), np.arange(100.0) % 3])
    ref = Reference.build("tip", "v1", ["distance_mi", "payment_type"], X, np.arange(100.0) / 10)
    again = read_reference(ref.write(tmp_path).parent)
    assert again.as_json() == ref.as_json()


def test_the_dynamic_models_reference_weighs_rides_as_the_service_sees_them(calibration):
    """Training samples a few points of each ride; the backend sends a progress event a minute:
    calm simulated traffic, as the service gets it, must not look drifted."""
    rides = simulator.simulate(calibration, 1500, seed=8)
    prog = simulator.progress(rides, seed=8)
    model, initial = load_model("dynamic_duration"), load_model("initial_duration")
    cols = {c: prog[c].to_numpy() for c in ("elapsed_min", "distance_done_mi", "distance_left_mi")}
    ride = prog["ride_index"].to_numpy()
    cols["initial_duration_min"] = initial.predict_columns(request_columns(rides))[ride]
    cols["event_time"] = rides["started_s"].to_numpy()[ride] + prog["elapsed_min"].to_numpy() * 60
    drift = ModelDrift(read_reference(model.path), model.metadata["features"], window_s=60)
    drift.observe(build_features("dynamic_duration", cols), model.predict_columns(cols))
    assert max(drift.window()[1].values()) < 0.1


def test_weighted_quantiles_count_each_value_its_weight():
    from shared.ml.reference import weighted_quantiles

    x = np.array([1.0, 2.0, 3.0])
    assert weighted_quantiles(x, np.array([0.5]), np.array([1.0, 1.0, 8.0]))[0] > 2.5
    assert weighted_quantiles(x, np.array([0.5]), np.array([1.0, 1.0, 1.0]))[0] == pytest.approx(2.0)


def test_the_shipped_tip_reference_is_what_the_same_code_makes_from_the_same_data():
    from training.reference import reference_for, training_matrix

    model = load_model("tip")
    X, weights = training_matrix(model.metadata, model.path.parents[1])
    again = reference_for("tip", model.version, model.estimator, X, read_reference(model.path).source, weights)
    assert weights is None and again.as_json() == json.loads((model.path / REFERENCE_FILE).read_text())
