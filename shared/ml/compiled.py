"""The trained trees as native code: the same predictions, without scikit-learn's per-call cost.

scikit-learn's ``HistGradientBoostingRegressor.predict`` walks its trees one Python call at a time:
a few milliseconds per call even for one row, and the request-time ensembles hold over a thousand
trees. treelite imports each fitted booster, tl2cgen generates its trees as C, and gcc compiles
them with a loop of ours (:data:`_ROWS_SOURCE`) to a shared library, so one call scores a whole
batch in C. What sits around the boosters — the zone-pace step, the log-target inverse, the
ensemble's mean — stays numpy.

What a model was taken apart into — which libraries, and the numpy around them — is its serving
form (:mod:`shared.ml.native`): compiled trees are always assembled from it, and it is cached so a
replica can serve from it later without scikit-learn.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingRegressor, VotingRegressor
from sklearn.pipeline import Pipeline

from shared.ml.cost_model import CostFromDuration
from shared.ml.native import (
    INVERSES,
    ROWS_TAG,
    TOLERANCE,
    Form,
    NotCompilable,
    Predict,
    build,
    form_document,
    form_path,
)
from shared.ml.zone_pace import ZonePace

log = logging.getLogger("ridestream.compiled")
__all__ = ["TOLERANCE", "NotCompilable", "Predict", "compile_estimator", "form_of", "verified"]


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


def _library(booster: HistGradientBoostingRegressor, cache: Path) -> Form:
    """The booster compiled to a library in ``cache`` (once: then reused), as a ``trees`` form."""
    import tl2cgen
    import treelite

    model = treelite.sklearn.import_model(booster)
    digest = hashlib.sha256(model.serialize_bytes()).hexdigest()[:16]
    tag = f"{tl2cgen.__version__}-{ROWS_TAG}-{platform.machine()}"
    path = cache / f"trees-{digest}-{tag}.so"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f"{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process compiles; the others wait and reuse it
            if not path.is_file():
                _build(model, path, cache)
    features = ctypes.CDLL(str(path)).get_num_feature()
    categorical, known = _known_categories(booster, features)
    return {"kind": "trees", "library": path.name, "categorical": categorical, "known": known}


def _known_categories(booster: HistGradientBoostingRegressor, features: int) -> tuple[list[int], dict[str, list[int]]]:
    """Which features are categorical, and the categories the booster saw in training for each
    (scikit-learn treats any other value of a categorical feature as missing; HistGradientBoosting's
    categories are small non-negative integers)."""
    flags = booster.is_categorical_
    if flags is None or not flags.any():
        return [], {}
    encoder = getattr(booster, "_preprocessor", None)
    if encoder is None:
        raise NotCompilable("categorical features without scikit-learn's category encoder")
    columns = [int(c) for c in np.flatnonzero(flags)]
    if max(columns) >= features:
        raise NotCompilable("a categorical feature beyond the trees' features")
    seen = [c[~np.isnan(c)].astype(np.intp) for c in encoder.named_transformers_["encoder"].categories_]
    return columns, {str(column): sorted(int(v) for v in codes) for column, codes in zip(columns, seen)}


def form_of(estimator: Any, cache: Path) -> Form:
    """The serving form of a booster, or of a pipeline (zone-pace steps) / mean ensemble / log
    target / cost from duration of them, with every booster compiled into ``cache``."""
    if isinstance(estimator, HistGradientBoostingRegressor):
        return _library(estimator, cache)
    if isinstance(estimator, Pipeline):
        *steps, (_, last) = estimator.steps
        if not all(isinstance(step, ZonePace) for _, step in steps):
            raise NotCompilable("a pipeline step other than the zone pace")
        return {"kind": "pipeline", "zone_pace": [{"pickup": step.pickup.tolist(), "dropoff": step.dropoff.tolist()}
                                                  for _, step in steps], "final": form_of(last, cache)}
    if isinstance(estimator, VotingRegressor) and estimator.weights is None:
        return {"kind": "mean", "members": [form_of(e, cache) for e in estimator.estimators_]}
    if isinstance(estimator, TransformedTargetRegressor) and estimator.inverse_func is not None:
        inverse = next((name for name, f in INVERSES.items() if f is estimator.inverse_func), None)
        if inverse is None:
            raise NotCompilable(f"a target transformed back by {estimator.inverse_func!r}")
        return {"kind": "inverse", "inverse": inverse, "of": form_of(estimator.regressor_, cache)}
    if isinstance(estimator, CostFromDuration):
        return {"kind": "cost", "duration": form_of(estimator.duration_, cache), "fare": form_of(estimator.fare_, cache)}
    raise NotCompilable(type(estimator).__name__)


def compile_estimator(estimator: Any, cache: Path, threads: int = 1) -> Predict:
    """A native ``predict`` for ``estimator``, assembled from its serving form (:func:`form_of`)."""
    return build(form_of(estimator, cache), cache, threads)


def verified(estimator: Any, probe: np.ndarray, cache: Path, threads: int = 1, key: str | None = None) -> Predict | None:
    """The compiled ``predict`` if it matches ``estimator.predict`` on ``probe``; else None (logged).
    With ``key`` (the artifact's), its serving form is cached under it with scikit-learn's
    predictions, so a replica can serve it later without scikit-learn (:func:`shared.ml.native.load_form`)."""
    try:
        form = form_of(estimator, cache)
        fast = build(form, cache, threads)
        expected = estimator.predict(probe)
        gap = float(np.max(np.abs(fast(probe) - expected)))
    except NotCompilable as exc:
        log.info("no compiled form for %s: serving with scikit-learn", exc)
        return None
    except Exception as exc:  # no compiler, an unexpected tree layout, …: keep the safe path
        log.warning("could not compile the model (%s: %s): serving with scikit-learn", type(exc).__name__, exc)
        return None
    if not gap <= TOLERANCE:
        log.warning("compiled model differs from scikit-learn by %.3g: serving with scikit-learn", gap)
        return None
    if key is not None:
        from shared.ml.artifacts import write_atomic

        try:
            write_atomic(form_path(cache, key), form_document(form, probe, expected))
        except OSError as exc:  # a read-only cache: served all the same, checked again next time
            log.info("could not cache the serving form in %s: %s", cache, exc)
    return fast
