"""The trained trees as native code: the same predictions, without scikit-learn's per-call cost.

scikit-learn's ``HistGradientBoostingRegressor.predict`` walks its trees one Python call at a time:
a few milliseconds per call even for one row, and the request-time ensembles hold over a thousand
trees. treelite imports each fitted booster, tl2cgen generates its trees as C, and gcc compiles
them with a loop of ours (:data:`_ROWS_SOURCE`) to a shared library, so one call scores a whole
batch in C. What sits around the boosters — the zone-pace step, the log-target inverse, the
ensemble's mean — stays numpy.

Compiled trees run without the GIL: :func:`meanwhile` lets the caller's thread do Python work
(the runtime produces the previous batch) while they run.

Safety: a compiled model is used only after it reproduced scikit-learn's predictions on a probe
batch (real trips, plus every category code a feature may carry); anything unsupported, no
compiler, or any difference keeps the model on scikit-learn. Libraries are cached per model
version under ``<state_dir>/compiled``, written atomically so concurrent processes share them.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import logging
import os
import platform
import sys
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

from shared.ml.cost_model import CostFromDuration

log = logging.getLogger("ridestream.compiled")

Predict = Callable[[np.ndarray], np.ndarray]
TOLERANCE = 1e-6  # largest difference from scikit-learn accepted, in the target's unit


class NotCompilable(Exception):
    """This estimator (or a part of it) has no compiled form here."""


_spare = threading.local()  # the task :func:`meanwhile` holds for this thread's next native call


@contextmanager
def meanwhile(task: Callable[[], None], min_rows: int = 0) -> Iterator[None]:
    """Run ``task`` on this thread while the block's first compiled prediction of at least
    ``min_rows`` rows runs — the trees release the GIL, so the two overlap on two cores — or at the
    block's end if none ran. A caller that knows its batch passes its largest group's size (about):
    the task then overlaps the longest call (the duration service's progress model, not the first,
    small request ensemble).

    If the block raises, ``task`` is dropped: the caller decides what an unfinished task means."""
    _spare.task, _spare.min_rows = task, min_rows
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


def _beside_spare_task(call: Callable[[], np.ndarray], rows: int) -> np.ndarray:
    """``call()`` on ``rows`` rows, with this thread's spare task (if any, and if the call is large
    enough for it) run meanwhile."""
    task = getattr(_spare, "task", None)
    if task is None or rows < _spare.min_rows:
        return call()
    _spare.task = None
    running = _native_thread().submit(call)
    try:
        task()
    finally:
        result = running.result()  # never leave native code running behind an exception
    return result


# Compiled beside the generated trees: a whole batch in one call. tl2cgen's own runtime (a
# DMatrix, then its Predictor over ctypes) cost ~110 µs a call whatever the rows, and blanking
# unseen categories in numpy ~20 µs more — together a third of scoring a small batch.
# A value is "missing" where scikit-learn treats it so: NaN, and a categorical value the booster
# never saw in training (negative, fractional, too large or unknown — see _known_categories);
# the trees themselves would send an unseen category the other way.
_ROWS_SOURCE = """
#include "header.h"

void ridestream_predict_rows(const double* X, int64_t rows, const unsigned char* categorical,
                             const unsigned char* known, int64_t width, double* out) {
  const int features = get_num_feature();
  union Entry row[features];
  for (int64_t r = 0; r < rows; ++r) {
    const double* x = X + r * features;
    for (int j = 0; j < features; ++j) {
      const double v = x[j];
      if (isnan(v) || (categorical[j] && !(v >= 0 && v < (double)width && v == floor(v)
                                            && known[j * width + (int64_t)v]))) {
        row[j].missing = -1;
      } else {
        row[j].fvalue = v;
      }
    }
    out[r] = 0.0;
    predict(row, 0, out + r);  /* quantizes row in place: refilled for the next */
  }
}
"""
_ROWS_TAG = "rows2"  # part of the cached library's name: bump when _ROWS_SOURCE changes


@ctypes.CFUNCTYPE(None, ctypes.c_char_p)
def _native_log(message: bytes) -> None:
    log.debug("tl2cgen: %s", message.decode("utf-8", "replace").strip())


# what tl2cgen's embedded treelite writes to stderr each time it reads one of our models
_VERSION_NOTE = ("originated from a newer Treelite version", "Currently running Treelite version",
                 "The model checkpoint was generated from Treelite version")
_stderr_lock = threading.Lock()


@contextmanager
def _tl2cgen_quietly() -> Iterator[None]:
    """Keep tl2cgen's chatter out of the user's terminal and logs (logged at DEBUG instead); a
    user reads it as a broken install:

    - tl2cgen 1.0.0, its newest release, embeds treelite 4.1.2 and writes three lines to stderr
      each time it reads a model, because ours are imported by treelite 4.8.1 — the first that
      imports scikit-learn 1.9's boosters with categorical features (4.1.2 fails an assertion on
      them), so the versions cannot be aligned. What tl2cgen reads is checked anyway:
      :func:`verified` compares the compiled trees with scikit-learn before they serve;
    - its log lines ("Parallel compilation enabled; member trees will be divided into N
      translation units") describe what it is doing, and go to ``print`` by default.

    stderr is the process's file descriptor 2, so while the block runs it is captured, and whatever
    else was written to it in the meantime is written back afterwards: nothing is lost."""
    from tl2cgen.libloader import _LIB, _check_call

    _check_call(_LIB.TL2cgenRegisterLogCallback(_native_log))  # module-level: ctypes keeps it alive
    with _stderr_lock, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if any(note in line for note in _VERSION_NOTE):
                    log.debug("tl2cgen: %s", line.strip())
                else:
                    os.write(2, line.encode())


def _build(model: Any, path: Path, cache: Path) -> None:
    """Generate the trees' C code (tl2cgen), add :data:`_ROWS_SOURCE`, compile to ``path``."""
    import tl2cgen

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        source = Path(tmp) / "src"
        with _tl2cgen_quietly():
            tl2cgen.generate_c_code(model, source, {"parallel_comp": cores, "quantize": 1}, verbose=False)
        (source / "rows.c").write_text(_ROWS_SOURCE)
        recipe_path = source / "recipe.json"
        recipe = json.loads(recipe_path.read_text())
        recipe["sources"].append({"name": "rows", "length": _ROWS_SOURCE.count("\n")})
        recipe_path.write_text(json.dumps(recipe))
        built = tl2cgen.create_shared("gcc", source, nthread=cores, long_build_time_warning=False)
        os.replace(built, path)  # atomic (same directory tree): a reader sees all of it or nothing


def _library(booster: HistGradientBoostingRegressor, cache: Path, threads: int) -> Predict:
    import tl2cgen
    import treelite

    model = treelite.sklearn.import_model(booster)
    digest = hashlib.sha256(model.serialize_bytes()).hexdigest()[:16]
    tag = f"{tl2cgen.__version__}-{_ROWS_TAG}-{platform.machine()}"
    path = cache / f"trees-{digest}-{tag}.so"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f"{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process compiles; the others wait and reuse it
            if not path.is_file():
                _build(model, path, cache)
    library = ctypes.CDLL(str(path))  # a CDLL call releases the GIL while the trees run
    if library.get_num_target() != 1:
        raise NotCompilable("a booster with more than one target")
    features = library.get_num_feature()
    categorical, known = _known_categories(booster, features)
    rows_of = library.ridestream_predict_rows
    rows_of.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                        ctypes.c_void_p]
    rows_of.restype = None
    tables = (categorical.ctypes.data, known.ctypes.data, known.shape[1])

    def run(X: np.ndarray, _tables_alive: tuple = (categorical, known)) -> np.ndarray:
        out = np.empty(len(X))
        rows_of(X.ctypes.data, len(X), *tables, out.ctypes.data)
        return out

    def predict(X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)  # read, never written
        if X.ndim != 2 or X.shape[1] != features:
            raise ValueError(f"features of shape {X.shape}; the trees take {features} a row")
        if threads > 1 and len(X) >= _SPLIT_FROM:
            return _beside_spare_task(lambda: _in_parts(run, X, threads), len(X))
        return _beside_spare_task(lambda: run(X), len(X))

    return predict


_SPLIT_FROM = 2000  # rows below which one thread scores the whole batch (model_threads > 1)


@cache
def _part_threads(parts: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(parts, thread_name_prefix="native-part")


def _in_parts(run: Callable[[np.ndarray], np.ndarray], X: np.ndarray, parts: int) -> np.ndarray:
    """``run`` over ``parts`` slices of ``X`` on as many threads (each call releases the GIL)."""
    return np.concatenate(list(_part_threads(parts).map(run, np.array_split(X, parts))))


def _known_categories(booster: HistGradientBoostingRegressor, features: int) -> tuple[np.ndarray, np.ndarray]:
    """Which features are categorical (one byte each), and a (features × width) table of the
    categories the booster saw in training, for :data:`_ROWS_SOURCE`: scikit-learn treats any
    other value of a categorical feature as missing. (HistGradientBoosting's categories are small
    non-negative integers.)"""
    flags = booster.is_categorical_
    categorical = np.zeros(features, dtype=np.uint8)
    if flags is None or not flags.any():
        return categorical, np.zeros((features, 1), dtype=np.uint8)
    encoder = getattr(booster, "_preprocessor", None)
    if encoder is None:
        raise NotCompilable("categorical features without scikit-learn's category encoder")
    columns = np.flatnonzero(flags)
    seen = [c[~np.isnan(c)].astype(np.intp) for c in encoder.named_transformers_["encoder"].categories_]
    known = np.zeros((features, max((int(c.max()) for c in seen if len(c)), default=0) + 1), dtype=np.uint8)
    for column, categories in zip(columns, seen):
        known[column, categories] = 1
    categorical[columns] = 1
    return categorical, known


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
