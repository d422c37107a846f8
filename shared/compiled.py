"""The trained trees as native code: the same predictions, without scikit-learn's per-call cost.

scikit-learn's ``HistGradientBoostingRegressor.predict`` walks its trees one Python call at a time:
a few milliseconds per call even for one row, and the request-time ensembles hold over a thousand
trees. treelite imports each fitted booster and tl2cgen compiles it to a shared library (gcc), so
one call scores a whole batch in C. What sits around the boosters — the zone-pace step, the
log-target inverse, the ensemble's mean — stays numpy.

Compiled trees run without the GIL: :func:`meanwhile` lets the caller's thread do Python work
(the runtime produces the previous batch) while they run.

Safety: a compiled model is used only after it reproduced scikit-learn's predictions on a probe
batch (real trips, plus every category code a feature may carry); anything unsupported, no
compiler, or any difference keeps the model on scikit-learn. Libraries are cached per model
version under ``<state_dir>/compiled``, written atomically so concurrent processes share them.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import platform
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingRegressor, VotingRegressor
from sklearn.pipeline import Pipeline

from shared.cost_model import CostFromDuration

log = logging.getLogger("ridestream.compiled")

Predict = Callable[[np.ndarray], np.ndarray]
TOLERANCE = 1e-6  # largest difference from scikit-learn accepted, in the target's unit


class NotCompilable(Exception):
    """This estimator (or a part of it) has no compiled form here."""


_spare = threading.local()  # the task :func:`meanwhile` holds for this thread's next native call


@contextmanager
def meanwhile(task: Callable[[], None]) -> Iterator[None]:
    """Run ``task`` on this thread while the block's first compiled prediction runs — the trees
    release the GIL, so the two overlap on two cores — or at the block's end if none ran.

    If the block raises, ``task`` is dropped: the caller decides what an unfinished task means."""
    _spare.task = task
    try:
        yield
    except BaseException:
        _spare.task = None
        raise
    left, _spare.task = getattr(_spare, "task", None), None
    if left is not None:
        left()


@cache
def _native_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="native-predict")


def _beside_spare_task(call: Callable[[], np.ndarray]) -> np.ndarray:
    """``call()``, with this thread's spare task (if any) run meanwhile."""
    task = getattr(_spare, "task", None)
    if task is None:
        return call()
    _spare.task = None
    running = _native_thread().submit(call)
    try:
        task()
    finally:
        result = running.result()  # never leave native code running behind an exception
    return result


def _library(booster: HistGradientBoostingRegressor, cache: Path, threads: int) -> Predict:
    import tl2cgen
    import treelite

    model = treelite.sklearn.import_model(booster)
    digest = hashlib.sha256(model.serialize_bytes()).hexdigest()[:16]
    tag = f"{tl2cgen.__version__}-{platform.machine()}"
    path = cache / f"trees-{digest}-{tag}.so"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f"{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process compiles; the others wait and reuse it
            if not path.is_file():
                cores = os.cpu_count() or 1
                with tempfile.TemporaryDirectory(dir=cache) as tmp:
                    staged = Path(tmp) / path.name
                    tl2cgen.export_lib(model, toolchain="gcc", libpath=str(staged), nthread=cores,
                                       params={"parallel_comp": cores, "quantize": 1}, verbose=False)
                    os.replace(staged, path)  # atomic: a reader sees all of it or nothing
    predictor = tl2cgen.Predictor(str(path), nthread=threads)
    blank_unknown = _unknown_categories_blanker(booster)

    def predict(X: np.ndarray) -> np.ndarray:
        X = np.array(X, dtype=np.float64, order="C")  # a copy: unknown categories are blanked
        blank_unknown(X)
        matrix = tl2cgen.DMatrix(X)
        return _beside_spare_task(lambda: predictor.predict(matrix)).reshape(len(X))

    return predict


def _unknown_categories_blanker(booster: HistGradientBoostingRegressor) -> Callable[[np.ndarray], None]:
    """Sets to NaN, in place, each categorical value the booster never saw in training: scikit-learn
    treats such a category as missing, so the compiled trees are given NaN there to do the same.

    A lookup table per categorical column (HistGradientBoosting's categories are small
    non-negative integers) instead of ``np.isin``: ``isin``'s fixed cost (~15 µs a column) was a
    fifth of scoring a one-event batch."""
    if booster.is_categorical_ is None or not booster.is_categorical_.any():
        return lambda X: None
    encoder = getattr(booster, "_preprocessor", None)
    if encoder is None:
        raise NotCompilable("categorical features without scikit-learn's category encoder")
    columns = np.flatnonzero(booster.is_categorical_)
    seen = [c[~np.isnan(c)].astype(np.intp) for c in encoder.named_transformers_["encoder"].categories_]
    table = np.zeros((len(columns), max((int(c.max()) for c in seen if len(c)), default=0) + 1), dtype=np.bool_)
    for row, categories in enumerate(seen):
        table[row, categories] = True
    rows = np.arange(len(columns))

    def blank(X: np.ndarray) -> None:
        values = X[:, columns]
        with np.errstate(invalid="ignore"):  # NaN and ±inf are never known
            in_table = (values >= 0) & (values < table.shape[1]) & (values == np.floor(values))
        index = np.where(in_table, values, 0).astype(np.intp)
        X[:, columns] = np.where(in_table & table[rows, index], values, np.nan)

    return blank


def compile_estimator(estimator: Any, cache: Path, threads: int = 1) -> Predict:
    """A native ``predict`` for a booster, or a pipeline / mean ensemble / log-target / cost from
    duration of them."""
    if isinstance(estimator, HistGradientBoostingRegressor):
        return _library(estimator, cache, threads)
    if isinstance(estimator, Pipeline):
        *steps, (_, last) = estimator.steps
        transforms = [step.transform for _, step in steps]
        final = compile_estimator(last, cache, threads)

        def pipeline(X: np.ndarray) -> np.ndarray:
            for transform in transforms:
                X = transform(X)
            return final(X)

        return pipeline
    if isinstance(estimator, VotingRegressor) and estimator.weights is None:
        members = [compile_estimator(e, cache, threads) for e in estimator.estimators_]
        return lambda X: np.mean([m(X) for m in members], axis=0)
    if isinstance(estimator, TransformedTargetRegressor) and estimator.inverse_func is not None:
        inner, inverse = compile_estimator(estimator.regressor_, cache, threads), estimator.inverse_func
        return lambda X: inverse(inner(X))
    if isinstance(estimator, CostFromDuration):
        duration = compile_estimator(estimator.duration_, cache, threads)
        fare = compile_estimator(estimator.fare_, cache, threads)
        return lambda X: CostFromDuration.combine(X, duration, fare)
    raise NotCompilable(type(estimator).__name__)


def verified(estimator: Any, probe: np.ndarray, cache: Path, threads: int = 1) -> Predict | None:
    """The compiled ``predict`` if it matches ``estimator.predict`` on ``probe``; else None (logged)."""
    try:
        fast = compile_estimator(estimator, cache, threads)
        gap = float(np.max(np.abs(fast(probe) - estimator.predict(probe))))
    except NotCompilable as exc:
        log.info("no compiled form for %s: serving with scikit-learn", exc)
        return None
    except Exception as exc:  # no compiler, an unexpected tree layout, …: keep the safe path
        log.warning("could not compile the model (%s: %s): serving with scikit-learn", type(exc).__name__, exc)
        return None
    if not gap <= TOLERANCE:
        log.warning("compiled model differs from scikit-learn by %.3g: serving with scikit-learn", gap)
        return None
    return fast
