"""Serving compiled trees without scikit-learn: a model's *serving form*.

:mod:`shared.ml.compiled` takes a fitted scikit-learn model apart — boosters compiled to shared
libraries, and what sits around them (the zone-pace step, the log-target inverse, the ensemble's
mean, the cost from its duration) — and writes that shape as a small JSON document, the serving
form, beside the libraries. This module turns a form back into one ``predict`` with numpy and
ctypes alone. The form is the only way compiled trees are assembled, so what was checked against
scikit-learn when it was written is what serves.

A replica that finds its model's form in the cache (named by the artifact's checksum) serves
from it without importing scikit-learn, SciPy or joblib: ~1 s and ~100 MB less at start-up. It
trusts the form no more than the libraries themselves: before serving, the form must reproduce
the predictions scikit-learn made on the probe batch when the form was written (stored in it).

Compiled trees run without the GIL: :func:`meanwhile` lets the caller's thread do Python work
(the runtime produces the previous batch) while they run.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from shared.ml.features import cost_from_parts, zone_pace_columns

log = logging.getLogger("ridestream.compiled")

Predict = Callable[[np.ndarray], np.ndarray]
Form = dict[str, Any]
TOLERANCE = 1e-6  # largest difference from scikit-learn accepted, in the target's unit
FORM_TAG = "form1"  # part of a form's file name: bump when the form's shape or meaning changes
ROWS_TAG = "rows2"  # part of a compiled library's and a form's name: bump when compiled._ROWS_SOURCE changes
INVERSES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"expm1": np.expm1}


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


_SPLIT_FROM = 2000  # rows below which one thread scores the whole batch (model_threads > 1)


@cache
def _part_threads(parts: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(parts, thread_name_prefix="native-part")


def _in_parts(run: Callable[[np.ndarray], np.ndarray], X: np.ndarray, parts: int) -> np.ndarray:
    """``run`` over ``parts`` slices of ``X`` on as many threads (each call releases the GIL)."""
    return np.concatenate(list(_part_threads(parts).map(run, np.array_split(X, parts))))


def _trees(form: Form, cache_dir: Path, threads: int) -> Predict:
    """One booster's library (``form["library"]`` in ``cache_dir``) as a ``predict``. ``categorical``
    flags the categorical features, ``known`` lists the categories each saw in training:
    scikit-learn treats any other value of a categorical feature as missing, and the library's
    loop (``compiled._ROWS_SOURCE``) does the same with the table built here."""
    name = form["library"]
    if Path(name).name != name or not name.startswith("trees-") or not name.endswith(".so"):
        raise ValueError(f"{name!r} is not a library of the cache")  # only the cache's own libraries load
    path = Path(cache_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the cache")
    library = ctypes.CDLL(str(path))  # a CDLL call releases the GIL while the trees run
    if library.get_num_target() != 1:
        raise NotCompilable("a booster with more than one target")
    features = library.get_num_feature()
    categorical = np.zeros(features, dtype=np.uint8)
    categorical[[int(c) for c in form["categorical"]]] = 1
    width = max((max(codes) for codes in form["known"].values() if codes), default=0) + 1
    known = np.zeros((features, width), dtype=np.uint8)
    for column, codes in form["known"].items():
        known[int(column), [int(c) for c in codes]] = 1
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


def build(form: Form, cache_dir: Path, threads: int = 1) -> Predict:
    """The ``predict`` a serving form describes (its libraries in ``cache_dir``). Kinds: ``trees``
    (one booster's library), ``pipeline`` (zone-pace steps, then ``final``), ``mean`` (of
    ``members``), ``inverse`` (a log target's inverse ``of`` a form), ``cost`` (from ``duration``
    and ``fare``)."""
    kind = form["kind"]
    if kind == "trees":
        return _trees(form, cache_dir, threads)
    if kind == "pipeline":
        tables = [(np.asarray(step["pickup"]), np.asarray(step["dropoff"])) for step in form["zone_pace"]]
        final = build(form["final"], cache_dir, threads)

        def pipeline(X: np.ndarray) -> np.ndarray:
            for pickup, dropoff in tables:
                X = zone_pace_columns(X, pickup, dropoff)
            return final(X)

        return pipeline
    if kind == "mean":
        members = [build(m, cache_dir, threads) for m in form["members"]]
        return lambda X: np.mean([m(X) for m in members], axis=0)
    if kind == "inverse":
        inner, inverse = build(form["of"], cache_dir, threads), INVERSES[form["inverse"]]
        return lambda X: inverse(inner(X))
    if kind == "cost":
        duration, fare = (build(form[part], cache_dir, threads) for part in ("duration", "fare"))
        return lambda X: cost_from_parts(X, duration, fare)
    raise NotCompilable(f"a serving form of kind {kind!r}")


@cache
def _made_with() -> str:
    """What a form and its libraries were checked with: the libraries' loop, tl2cgen, and the
    scikit-learn whose predictions the form holds. Any of them changed, the form is not found,
    and the model is checked (and its trees built) again."""
    version = importlib.metadata.version
    return f"{ROWS_TAG}-tl2cgen{version('tl2cgen')}-sklearn{version('scikit-learn')}"


def form_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{FORM_TAG}-{_made_with()}-{key}.json"


def _digest(probe: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(probe, dtype=np.float64).tobytes()).hexdigest()[:16]


def form_document(form: Form, probe: np.ndarray, expected: np.ndarray) -> str:
    """A form with scikit-learn's predictions on ``probe``, for :func:`load_form` to check against."""
    return json.dumps({"form": form, "probe": _digest(probe), "expected": [float(v) for v in expected]})


def load_form(cache_dir: Path, key: str, probe: np.ndarray, threads: int = 1) -> Predict | None:
    """The ``predict`` of the form cached under ``key`` if it reproduces, on ``probe``, the
    predictions scikit-learn made when it was written; else None (nothing cached, a library
    missing, another probe, any difference: the caller loads the model with scikit-learn)."""
    path = form_path(cache_dir, key)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cannot read the serving form %s (%s): loading the model with scikit-learn", path, exc)
        return None
    try:
        if document.get("probe") != _digest(probe):
            log.info("the serving form %s was written against another probe batch: checking the model again", path)
            return None
        predict = build(document["form"], cache_dir, threads)
        gap = float(np.max(np.abs(predict(probe) - np.asarray(document["expected"]))))
    except FileNotFoundError as exc:
        log.info("%s: compiling the model's trees again (%s)", path.name, exc)
        return None
    except Exception as exc:  # a damaged form or library: the model's own path decides
        log.warning("the serving form %s cannot be used (%s: %s): loading the model with scikit-learn", path,
                    type(exc).__name__, exc)
        return None
    if not gap <= TOLERANCE:
        log.warning("the serving form %s differs from scikit-learn by %.3g: loading the model with scikit-learn",
                    path, gap)
        return None
    return predict
