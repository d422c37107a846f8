"""Compiled trees: used only when they give scikit-learn's predictions, else scikit-learn stays."""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest

from shared.kafka.settings import Settings
from shared.ml import compiled
from shared.ml import native as native_trees
from shared.ml.artifacts import MODEL_NAMES, load_model, probe_features


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
    real = compiled.build
    monkeypatch.setattr(compiled, "build", lambda *a, **k: (lambda X, f=real(*a, **k): f(X) + 0.01))
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


def test_a_task_runs_on_the_calling_thread_while_the_native_call_runs():
    """Each side waits for the other to have started: this passes only if they overlap."""
    native_started, task_done, ran_on = threading.Event(), threading.Event(), []

    def native() -> np.ndarray:
        native_started.set()
        assert task_done.wait(10), "the task did not run while the native call did"
        return np.arange(3.0)

    def task() -> None:
        assert native_started.wait(10), "the native call did not start while the task ran"
        ran_on.append(threading.get_ident())
        task_done.set()

    with native_trees.meanwhile(task):
        result = native_trees._beside_spare_task(native, 3)
        assert ran_on == [threading.get_ident()]  # done when the call returns, on this thread
        np.testing.assert_array_equal(native_trees._beside_spare_task(native, 3), result)  # the task ran once
    assert ran_on == [threading.get_ident()]


def test_the_task_waits_for_a_call_of_at_least_the_rows_it_was_given():
    ran = []
    with native_trees.meanwhile(lambda: ran.append("beside"), min_rows=100):
        native_trees._beside_spare_task(lambda: ran.append("small") or np.zeros(10), 10)  # too small: alone
        assert ran == ["small"]
        native_trees._beside_spare_task(lambda: np.zeros(100), 100)
        assert ran == ["small", "beside"]
    with native_trees.meanwhile(lambda: ran.append("end"), min_rows=100):
        native_trees._beside_spare_task(lambda: np.zeros(10), 10)
    assert ran == ["small", "beside", "end"]  # no call large enough: at the block's end


def test_a_task_without_a_native_call_runs_at_the_end_and_is_dropped_on_an_error():
    ran = []
    with native_trees.meanwhile(lambda: ran.append("end")):
        assert ran == []
    assert ran == ["end"]
    with pytest.raises(RuntimeError), native_trees.meanwhile(lambda: ran.append("dropped")):
        raise RuntimeError("scoring failed")
    assert ran == ["end"]
    with native_trees.meanwhile(lambda: ran.append("next")):  # nothing left over from the failed block
        pass
    assert ran == ["end", "next"]


def test_a_failing_task_waits_for_the_native_call_before_raising():
    finished = []

    def native() -> np.ndarray:
        time.sleep(0.05)
        finished.append(True)
        return np.zeros(1)

    def task() -> None:
        raise ValueError("produce failed")

    with pytest.raises(ValueError), native_trees.meanwhile(task):
        native_trees._beside_spare_task(native, 1)
    assert finished == [True]


@needs_gcc
def test_compiled_predictions_are_the_same_with_a_task_beside_them(cache):
    model = load_model("tip")
    assert model.accelerate(cache)
    X = probe_features("tip", rows=500, seed=3)
    alone = model.native(X)
    ran = []
    with native_trees.meanwhile(lambda: ran.append(threading.get_ident())):
        beside = model.native(X)
        assert ran == [threading.get_ident()]  # it ran during the compiled call
    np.testing.assert_array_equal(beside, alone)


@needs_gcc
def test_categories_never_seen_in_training_score_as_missing_as_in_scikit_learn(cache):
    """Compiled trees cannot tell an unseen category from a seen one; the values they are given
    blank what scikit-learn would treat as missing: negative, fractional, too large."""
    model = load_model("tip")
    assert model.accelerate(cache, threads=1)
    columns = np.flatnonzero(model.estimator.is_categorical_)
    X = np.repeat(probe_features("tip", rows=50, seed=3)[:12], 12, axis=0)
    odd = [np.nan, -1.0, -0.0, 0.0, 2.5, 4.0, 5.0, 6.0, 7.0, 255.0, 1e300, -3.5]
    for i, column in enumerate(columns):
        X[:, column] = np.roll(np.tile(odd, 12), i * 5)
    np.testing.assert_allclose(model.native(X), model.estimator.predict(X), atol=compiled.TOLERANCE)


@needs_gcc
def test_a_large_batch_split_over_threads_scores_as_one(cache):
    """model_threads > 1: a batch of at least _SPLIT_FROM rows is scored in slices on as many
    threads, and comes back whole and in order."""
    model = load_model("initial_duration")
    fast = compiled.compile_estimator(model.estimator, cache, threads=3)
    X = probe_features("initial_duration", rows=1500, seed=11)
    X = np.concatenate([X, X[::-1]])[: native_trees._SPLIT_FROM + 7]
    assert len(X) >= native_trees._SPLIT_FROM
    np.testing.assert_allclose(fast(X), model.estimator.predict(X), atol=compiled.TOLERANCE)
    np.testing.assert_allclose(fast(X[:5]), model.estimator.predict(X[:5]), atol=compiled.TOLERANCE)


@needs_gcc
def test_compiling_prints_nothing_to_the_user(tmp_path, capfd):
    """tl2cgen's version notes and log lines stay out of stdout and stderr (DEBUG has them)."""
    assert load_model("tip").accelerate(tmp_path / "fresh-cache")  # a fresh cache: it compiles
    out, err = capfd.readouterr()
    assert "Treelite" not in out + err and "Parallel compilation" not in out + err, out + err


def test_what_else_reaches_stderr_while_tl2cgen_runs_is_written_back(capfd):
    with compiled._tl2cgen_quietly():
        os.write(2, b"Currently running Treelite version 4.1.2\n")
        os.write(2, b"a line of someone else\n")
    out, err = capfd.readouterr()
    assert err == "a line of someone else\n"
