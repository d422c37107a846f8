"""Serving without scikit-learn: once a model's trees were compiled and checked, a service loads it
from its serving form in the cache — no scikit-learn, SciPy or joblib in the process — with the
same predictions; a form that is missing, stale or wrong is never used."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest

from shared.kafka.settings import Settings
from shared.ml import native
from shared.ml.artifacts import MODEL_NAMES, form_key, load_model, probe_features

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="compiling trees needs gcc")
SKLEARN_STACK = ("sklearn", "scipy", "joblib", "treelite", "tl2cgen")
DATA_STACK = ("pandas", "pyarrow")  # a scoring service needs neither; the backend's simulator needs pandas


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache of its own, seeded with the services' compiled libraries (nothing to compile again),
    where each shipped model is checked once against scikit-learn, which writes its form."""
    here = tmp_path_factory.mktemp("compiled")
    for library in Settings().compiled_dir.glob("trees-*.so"):
        shutil.copy(library, here)
    for name in MODEL_NAMES:
        assert load_model(name).accelerate(here)
    return here


def test_a_fresh_process_serves_every_model_from_its_form_without_scikit_learn(cache, tmp_path):
    rows = {name: unseen_rows(name) for name in MODEL_NAMES}
    for name, X in rows.items():
        np.save(tmp_path / f"{name}-X.npy", X)
    script = f"""
import json, sys
import numpy as np
from pathlib import Path
from shared.ml.artifacts import MODEL_NAMES, load_model
out = {{}}
for name in MODEL_NAMES:
    model = load_model(name, native_cache=Path({str(cache)!r}))
    assert model.native is not None, name
    y = model.native(np.load(Path({str(tmp_path)!r}) / f"{{name}}-X.npy"))
    np.save(Path({str(tmp_path)!r}) / f"{{name}}-y.npy", y)
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & set(SKLEARN_STACK + DATA_STACK), sorted(loaded & set(SKLEARN_STACK + DATA_STACK))
    for name, X in rows.items():
        expected = load_model(name).estimator.predict(X)  # scikit-learn, here
        np.testing.assert_allclose(np.load(tmp_path / f"{name}-y.npy"), expected, atol=native.TOLERANCE)


def unseen_rows(name: str, n: int = 300) -> np.ndarray:
    """Rows the probe batch never held: each column of probe rows shuffled on its own (every value
    a real one, in combinations nobody saw), some values missing."""
    rng = np.random.default_rng(13)
    X = probe_features(name)[:n].copy()
    for j in range(X.shape[1]):
        X[:, j] = rng.permutation(X[:, j])
    X[::7, 0] = np.nan
    return X


def test_a_form_split_over_threads_scores_as_one(cache):
    """model_threads > 1: a batch of at least _SPLIT_FROM rows is scored in slices on as many threads."""
    model = load_model("dynamic_duration", native_cache=cache, threads=2)
    assert model.native is not None
    X = np.concatenate([unseen_rows("dynamic_duration", 1500)] * 2)
    assert len(X) >= native._SPLIT_FROM
    np.testing.assert_allclose(model.native(X), load_model("dynamic_duration").estimator.predict(X),
                               atol=native.TOLERANCE)


def test_the_estimator_is_still_there_when_asked_for(cache):
    model = load_model("tip", native_cache=cache)
    assert model.native is not None
    copy.copy(model.estimator)  # copy and pickle probe dunders: answered without unpickling, no recursion
    X = probe_features("tip", rows=20, seed=2)
    np.testing.assert_allclose(model.estimator.predict(X), model.native(X), atol=native.TOLERANCE)


def _form_file(cache, name: str):
    return native.form_path(cache, form_key(load_model(name).metadata))


def test_a_form_whose_predictions_differ_is_not_used(cache, tmp_path, caplog):
    own = tmp_path / "cache"
    shutil.copytree(cache, own)
    path = _form_file(own, "cost")
    document = json.loads(path.read_text())
    document["expected"][3] += 0.01
    path.write_text(json.dumps(document))
    with caplog.at_level(logging.WARNING):
        model = load_model("cost", native_cache=own)
    assert model.native is None and "differs from scikit-learn" in caplog.text
    assert model.accelerate(own)  # checked from the model again, and the form written anew
    assert load_model("cost", native_cache=own).native is not None


@pytest.mark.parametrize("damage", ["library gone", "not json", "not an object", "another probe", "unknown kind",
                                    "a library elsewhere"])
def test_a_missing_or_damaged_form_falls_back_to_the_model(cache, tmp_path, damage):
    own = tmp_path / "cache"
    shutil.copytree(cache, own)
    path = _form_file(own, "initial_duration")
    document = json.loads(path.read_text())
    if damage == "library gone":
        for library in own.glob("trees-*.so"):
            library.unlink()
    elif damage == "not json":
        path.write_text(path.read_text()[:100])
    elif damage == "not an object":
        path.write_text("[]")
    elif damage == "a library elsewhere":  # only the cache's own libraries are loaded
        path.write_text(json.dumps(document).replace('"library": "trees-', '"library": "../trees-', 1))
    elif damage == "another probe":
        document["probe"] = "0" * 16
        path.write_text(json.dumps(document))
    else:
        document["form"]["kind"] = "stacked"
        path.write_text(json.dumps(document))
    model = load_model("initial_duration", native_cache=own)
    assert model.native is None and type(model.estimator).__module__.startswith("sklearn")  # unpickled at once


def test_an_artifact_without_a_checksum_has_no_form():
    assert form_key({"name": "tip", "version": "v1"}) is None
    assert form_key({"name": "tip", "version": "v1", "checksum": "sha256:" + "ab" * 32}) == "tip-v1-" + "ab" * 8


@pytest.mark.parametrize("modules, absent", [
    ("consumers.runtime, consumers.services, consumers.control", SKLEARN_STACK + DATA_STACK),
    ("producer.web.app", SKLEARN_STACK),
], ids=["scoring services", "web backend"])
def test_serving_code_imports_no_scikit_learn(modules, absent):
    proc = subprocess.run([sys.executable, "-c", f"import json, sys\nimport {modules}\nprint(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = {m.split(".")[0] for m in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert not loaded & set(absent), sorted(loaded & set(absent))
