"""Compiled trees: used only when they give scikit-learn's predictions, else scikit-learn stays."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from shared import compiled
from shared.artifacts import MODEL_NAMES, load_model, probe_features
from shared.settings import Settings


@pytest.fixture(scope="module")
def cache():
    return Settings().compiled_dir  # the services' own cache: what is compiled here, they reuse


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="compiling trees needs gcc")


@needs_gcc
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_shipped_model_compiles_to_the_same_predictions(name, cache):
    model = load_model(name)
    assert model.accelerate(cache, threads=1)
    # rows the probe did not contain: other seeds, unseen categories, missing values
    X = probe_features(name, rows=300, seed=7)
    X[::5, 0] = np.nan
    np.testing.assert_allclose(model.native(X), model.estimator.predict(X), atol=compiled.TOLERANCE)


@needs_gcc
def test_a_library_is_compiled_once_and_reused(cache):
    first = load_model("tip")
    first.accelerate(cache)
    libraries = sorted(cache.glob("trees-*.so"))
    second = load_model("tip")
    assert second.accelerate(cache) and sorted(cache.glob("trees-*.so")) == libraries


@needs_gcc
def test_a_compiled_model_that_disagrees_is_not_used(cache, monkeypatch, caplog):
    model = load_model("tip")
    real = compiled.compile_estimator
    monkeypatch.setattr(compiled, "compile_estimator", lambda *a, **k: (lambda X, f=real(*a, **k): f(X) + 0.01))
    assert not model.accelerate(cache)
    assert model.native is None and "differs from scikit-learn" in caplog.text


def test_without_a_compiler_the_model_stays_on_scikit_learn(cache, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc to be found
    model = load_model("cost")
    assert not model.accelerate(tmp_path / "empty-cache")
    assert model.native is None and "serving with scikit-learn" in caplog.text
    assert model.predict_columns({f: np.array([v]) for f, v in {
        "trip_distance_mi": 2.0, "pickup_zone": 161, "dropoff_zone": 236, "passenger_count": 1,
        "payment_type": 1, "service": np.array([False])[0], "event_time": 1.552e9}.items()})[0] > 0


def test_unsupported_estimators_are_left_alone(cache):
    from sklearn.linear_model import LinearRegression

    X = np.random.default_rng(0).random((20, 3))
    assert compiled.verified(LinearRegression().fit(X, X[:, 0]), X, cache) is None
