"""The model registry: the store, aliases (champion in CURRENT), registration of trained versions,
checksums and what load_model refuses. Each test works in its own store under tmp_path."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from shared.kafka.settings import Settings
from shared.ml import registry
from shared.ml.artifacts import (
    MODEL_NAMES,
    MODELS_DIR,
    ModelError,
    check_artifact,
    checksum,
    load_model,
    model_store,
    resolve,
    save_model,
)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A copy of the committed artifacts: one version per model, each its champion."""
    root = tmp_path / "store"
    shutil.copytree(MODELS_DIR, root, ignore=shutil.ignore_patterns(".*"))
    return root


def add_version(store: Path, name: str, version: str, **changes) -> Path:
    """Another version of ``name``: the champion's bytes under a new id (metadata changed as asked)."""
    source = resolve(name, None, store)
    target = store / name / version
    shutil.copytree(source, target)
    meta = json.loads((target / "metadata.json").read_text())
    meta.update(version=version, **changes)
    (target / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return target


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# --- the store ---------------------------------------------------------------------------------

def test_the_store_is_the_setting_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("RIDESTREAM_MODEL_STORE", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    assert model_store() == MODELS_DIR == Settings().model_store
    monkeypatch.setenv("RIDESTREAM_MODEL_STORE", str(tmp_path / "elsewhere"))
    assert model_store() == tmp_path / "elsewhere" == Settings().model_store
    monkeypatch.delenv("RIDESTREAM_MODEL_STORE")
    (tmp_path / ".env").write_text(f"RIDESTREAM_MODEL_STORE={tmp_path / 'from-dotenv'}\n")
    assert model_store() == tmp_path / "from-dotenv" == Settings().model_store


def test_load_model_reads_the_store_in_force(store, monkeypatch):
    monkeypatch.setenv("RIDESTREAM_MODEL_STORE", str(store))
    add_version(store, "tip", "vsecond")
    (store / "tip" / "CURRENT").write_text("vsecond\n")
    model = load_model("tip")
    assert model.version == "vsecond" and model.path == store / "tip" / "vsecond"


# --- aliases -----------------------------------------------------------------------------------

def test_aliases_set_move_and_delete(store):
    champion = (store / "tip" / "CURRENT").read_text().strip()
    add_version(store, "tip", "vsecond")
    add_version(store, "tip", "vthird")
    assert registry.aliases("tip", store) == {"champion": champion}

    assert registry.set_alias("tip", "challenger", "vsecond", store) is None
    assert registry.set_alias("tip", "shadow-1", "vthird", store) is None
    assert json.loads((store / "tip" / "aliases.json").read_text()) == {"challenger": "vsecond", "shadow-1": "vthird"}
    assert registry.set_alias("tip", "challenger", "vthird", store) == "vsecond"  # moved
    assert registry.aliases("tip", store) == {"champion": champion, "challenger": "vthird", "shadow-1": "vthird"}
    assert resolve("tip", "challenger", store).name == "vthird"
    assert resolve("tip", "tip@shadow-1", store).name == "vthird"
    assert registry.resolve_version("tip", "tip@champion", store) == champion

    assert registry.delete_alias("tip", "shadow-1", store) == "vthird"
    assert registry.aliases("tip", store) == {"champion": champion, "challenger": "vthird"}
    with pytest.raises(ModelError, match="has no alias 'shadow-1'") as exc:
        registry.delete_alias("tip", "shadow-1", store)
    one_line(exc)
    assert not [p for p in (store / "tip").iterdir() if p.name.endswith(".tmp")]  # atomic writes leave nothing


def test_champion_lives_in_current(store):
    add_version(store, "cost", "vsecond")
    registry.set_alias("cost", "challenger", "vsecond", store)
    before = registry.set_alias("cost", "champion", "challenger", store)  # an alias names the version too
    assert (store / "cost" / "CURRENT").read_text() == "vsecond\n"
    assert "champion" not in json.loads((store / "cost" / "aliases.json").read_text())
    assert load_model("cost", models_dir=store).version == "vsecond"
    assert registry.set_alias("cost", "champion", before, store) == "vsecond"  # and back
    assert load_model("cost", models_dir=store).version == before
    with pytest.raises(ModelError, match="champion alias cannot be deleted.*models alias cost champion") as exc:
        registry.delete_alias("cost", "champion", store)
    one_line(exc)


@pytest.mark.parametrize("alias", ["Champion", "2nd", "-x", "a" * 41, "with space", "v0123456789", ""])
def test_bad_alias_names_are_refused(store, alias):
    with pytest.raises(ModelError, match="bad alias name") as exc:
        registry.set_alias("tip", alias, "champion", store)
    one_line(exc)


def test_unknown_models_versions_and_aliases_are_one_line_errors(store):
    with pytest.raises(ModelError, match=r"no model 'fare' in .*models: cost, dynamic_duration") as exc:
        registry.set_alias("fare", "challenger", "v1", store)
    one_line(exc)
    with pytest.raises(ModelError, match=r"model tip has no version or alias 'vnope' .*versions: v") as exc:
        registry.set_alias("tip", "challenger", "vnope", store)
    one_line(exc)
    with pytest.raises(ModelError, match="model tip has no alias 'canary'") as exc:
        resolve("tip", "tip@canary", store)
    one_line(exc)
    with pytest.raises(ModelError, match="names model cost, not tip") as exc:
        resolve("tip", "cost@champion", store)
    one_line(exc)


def test_the_champion_must_pass_the_checks_before_it_moves(store):
    bad = add_version(store, "tip", "vbad", features=["distance_mi"])
    before = (store / "tip" / "CURRENT").read_text()
    with pytest.raises(ModelError, match="other features"):
        registry.set_alias("tip", "champion", "vbad", store)
    assert (store / "tip" / "CURRENT").read_text() == before
    registry.set_alias("tip", "challenger", "vbad", store)  # any other alias may name it: the fleet refuses it
    assert registry.aliases("tip", store)["challenger"] == bad.name


# --- registering what training wrote --------------------------------------------------------------

def test_a_trained_version_becomes_the_challenger_not_the_champion(store):
    champion = (store / "tip" / "CURRENT").read_text()
    add_version(store, "tip", "vnew")
    assert registry.register("tip", "vnew", store) == ("challenger",)
    assert (store / "tip" / "CURRENT").read_text() == champion
    assert registry.aliases("tip", store)["challenger"] == "vnew"
    add_version(store, "tip", "vnewer")
    assert registry.register("tip", "vnewer", store) == ("challenger",)  # the challenger moves on
    assert registry.aliases("tip", store)["challenger"] == "vnewer"
    assert registry.register("tip", champion.strip(), store) == ()  # retrained to the champion itself


def test_champion_on_request_or_in_a_fresh_store(store, tmp_path):
    add_version(store, "tip", "vnew")
    assert registry.register("tip", "vnew", store, champion=True) == ("champion",)
    assert (store / "tip" / "CURRENT").read_text() == "vnew\n"

    fresh = tmp_path / "fresh"
    tip = load_model("tip", models_dir=store)
    save_model(tip.estimator, {**tip.metadata, "version": "vfirst"}, fresh, make_current=False)
    assert registry.register("tip", "vfirst", fresh) == ("champion",)
    assert load_model("tip", models_dir=fresh).version == "vfirst"
    assert registry.aliases("tip", fresh) == {"champion": "vfirst"}


def test_listing_shows_versions_aliases_mae_and_checksums(store):
    add_version(store, "tip", "vnew", created="2099-01-01T00:00:00Z")
    registry.register("tip", "vnew", store)
    listed = registry.list_models(store)
    assert sorted(listed) == sorted(MODEL_NAMES)
    tip = listed["tip"]
    assert [v.version for v in tip][-1] == "vnew"  # oldest first
    assert tip[0].aliases == ("champion",) and tip[-1].aliases == ("challenger",)
    assert tip[0].mae == pytest.approx(0.7257) and tip[0].created.startswith("2026-")
    assert listed["dynamic_duration"][0].mae == pytest.approx(1.0, abs=0.05)  # remaining-time MAE at half way
    assert {v.checksum_state() for vs in listed.values() for v in vs} == {"ok"}


# --- checksums and refusals --------------------------------------------------------------------

def test_the_committed_artifacts_checksums_verify():
    for name in MODEL_NAMES:
        path = resolve(name, None, MODELS_DIR)
        meta = check_artifact(path, name)
        assert meta["checksum"] == checksum(path / "model.joblib")
        assert meta["checksum"].startswith("sha256:") and len(meta["checksum"]) == 7 + 64


def test_save_model_writes_the_checksum_and_keeps_created_on_the_same_bytes(store, tmp_path):
    tip = load_model("tip", models_dir=store)
    meta = {k: v for k, v in tip.metadata.items() if k not in ("checksum", "created")}
    path = save_model(tip.estimator, {**meta, "version": "vsaved"}, tmp_path / "s")
    saved = json.loads((path / "metadata.json").read_text())
    assert saved["checksum"] == checksum(path / "model.joblib") and saved["created"].endswith("Z")
    (path / "metadata.json").write_text(json.dumps({**saved, "created": "2020-01-01T00:00:00Z"}))
    save_model(tip.estimator, {**meta, "version": "vsaved"}, tmp_path / "s")
    assert json.loads((path / "metadata.json").read_text())["created"] == "2020-01-01T00:00:00Z"


def test_a_corrupt_artifact_is_refused_with_one_line(store):
    path = resolve("tip", None, store)
    data = bytearray((path / "model.joblib").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped
    (path / "model.joblib").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model tip v\w+ is corrupt: model.joblib's sha256 is .* its metadata "
                                         r"says .*; copy the artifact again or retrain") as exc:
        load_model("tip", models_dir=store)
    one_line(exc)
    with pytest.raises(ModelError, match="is corrupt"):
        check_artifact(path)
    assert [v.checksum_state() for v in registry.versions("tip", store)] == ["corrupt"]


def test_an_artifact_of_another_scikit_learn_is_refused(store):
    path = resolve("cost", None, store)
    meta = json.loads((path / "metadata.json").read_text())
    meta["library_versions"]["scikit-learn"] = "1.2.2"
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"trained with scikit-learn 1\.2\.2, but this environment has") as exc:
        load_model("cost", models_dir=store)
    one_line(exc)


@pytest.mark.parametrize("change, reason", [
    (lambda f: f[:-1], "missing green"),
    (lambda f: [*f, "surge"], "unexpected surge"),
    (lambda f: [f[1], f[0], *f[2:]], "the same names in another order"),
])
def test_an_artifact_trained_on_other_features_is_refused(store, change, reason):
    path = resolve("tip", None, store)
    meta = json.loads((path / "metadata.json").read_text())
    meta["features"] = change(meta["features"])
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=rf"trained on other features than this code builds for tip \({reason}\)"
                                         r": retrain it") as exc:
        load_model("tip", models_dir=store)
    one_line(exc)


def test_an_artifact_without_a_checksum_loads_with_a_warning(store, caplog):
    path = resolve("tip", None, store)
    meta = json.loads((path / "metadata.json").read_text())
    del meta["checksum"]
    (path / "metadata.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="ridestream.models"):
        assert load_model("tip", models_dir=store).version == path.name
    assert "has no checksum" in caplog.text
    assert [v.checksum_state() for v in registry.versions("tip", store)] == ["none"]


def test_a_path_to_another_models_artifact_is_refused(store):
    with pytest.raises(ModelError, match="is a cost model, not tip") as exc:
        load_model("tip", str(resolve("cost", None, store)))
    one_line(exc)
