"""The cost model's shape: the TLC's fare rules applied to a predicted duration, plus a learnt rest."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression

from shared.ml.cost_model import CostFromDuration, meter_columns
from shared.ml.features import REQUEST_FEATURES
from training.train import best_rounds, fitted_boosters

MIDTOWN, WILLIAMSBURG, JFK, NEWARK, LAGUARDIA = 161, 255, 132, 1, 138


def requests(distance, pickup, dropoff) -> np.ndarray:
    X = np.zeros((len(distance), len(REQUEST_FEATURES)))
    X[:, REQUEST_FEATURES.index("distance_mi")] = distance
    X[:, REQUEST_FEATURES.index("pickup_zone")] = pickup
    X[:, REQUEST_FEATURES.index("dropoff_zone")] = dropoff
    return X


def test_the_meter_counts_miles_or_slow_minutes_and_knows_jfk_and_newark():
    X = requests([3.0, 3.0, 17.0, 17.0, 10.0, 12.0, 17.0],
                 [MIDTOWN, MIDTOWN, JFK, MIDTOWN, JFK, MIDTOWN, MIDTOWN],
                 [WILLIAMSBURG, WILLIAMSBURG, MIDTOWN, JFK, LAGUARDIA, NEWARK, NEWARK])
    minutes = np.array([10.0, 30.0, 70.0, 40.0, 30.0, 35.0, 95.0])
    out = meter_columns(X, minutes)
    np.testing.assert_array_equal(out[:, :-3], X)
    duration, slow, fare = out[:, -3:].T
    np.testing.assert_array_equal(duration, minutes)
    np.testing.assert_array_equal(slow, [0, 15, 0, 0, 0, 0, 10])  # minutes beyond 12 mph
    np.testing.assert_allclose(fare, [
        2.5 + 2.5 * 3,  # fast enough: the miles
        2.5 + 2.5 * 3 + 0.5 * 15,  # stuck: the slow minutes too
        52.0, 52.0,  # JFK ↔ Manhattan is flat, either way and however slow
        2.5 + 2.5 * 10,  # JFK to LaGuardia runs the meter
        2.5 + 2.5 * 12 + 17.5,  # Newark's surcharge
        2.5 + 2.5 * 17 + 0.5 * 10 + 17.5,
    ])


def test_training_needs_the_real_durations():
    with pytest.raises(TypeError, match="needs the trips' real durations"):
        CostFromDuration(LinearRegression(), DummyRegressor()).fit(requests([1.0], [MIDTOWN], [MIDTOWN]), [5.0])


def test_the_rest_is_learnt_on_real_durations_and_applied_at_the_predicted_one():
    rng = np.random.default_rng(0)
    distance = rng.uniform(0.5, 10, 400)
    X = requests(distance, MIDTOWN, WILLIAMSBURG)
    minutes = 4.0 + 4.0 * distance + rng.normal(0, 3, 400)  # often slower than 12 mph
    cost = meter_columns(X, minutes)[:, -1] + 3.3  # the meter plus flat surcharges
    model = CostFromDuration(LinearRegression(), DummyRegressor(strategy="median")).fit(X, cost, duration_min=minutes)

    assert model.fare_.predict(X[:1])[0] == pytest.approx(3.3)
    new = requests(np.array([1.0, 4.0, 9.0]), MIDTOWN, WILLIAMSBURG)
    expected = model.duration_.predict(new)
    np.testing.assert_allclose(model.predict(new), meter_columns(new, expected)[:, -1] + 3.3)
    np.testing.assert_allclose(model.predict(new), CostFromDuration.combine(new, model.duration_.predict,
                                                                            model.fare_.predict))


def test_training_refits_both_parts_with_their_best_number_of_trees():
    rng = np.random.default_rng(1)
    distance = rng.uniform(0.5, 10, 600)
    X = requests(distance, MIDTOWN, WILLIAMSBURG)
    minutes = 4.0 * distance + rng.gamma(2.0, 2.0, 600)
    cost = meter_columns(X, minutes)[:, -1] + rng.normal(3.3, 0.5, 600)
    booster = HistGradientBoostingRegressor(early_stopping=True, n_iter_no_change=5, max_iter=300, random_state=0)
    model = CostFromDuration(clone(booster), clone(booster)).fit(X, cost, duration_min=minutes)

    assert [prefix for prefix, _ in fitted_boosters(model)] == ["duration__", "fare__"]
    rounds = best_rounds(model)
    assert set(rounds) == {"duration__early_stopping", "duration__max_iter", "fare__early_stopping", "fare__max_iter"}
    refit = clone(model).set_params(**rounds).fit(X, cost, duration_min=minutes)
    assert refit.duration_.n_iter_ == rounds["duration__max_iter"] and refit.fare_.n_iter_ == rounds["fare__max_iter"]
