"""The model registry: the store, aliases (champion in CURRENT), registration of trained versions,
checksums and what load_model refuses. Each test works in its own store under tmp_path."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.errors import RidestreamError
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
    probe_features,
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


def one_line(exc: pytest.ExceptionInfo | BaseException) -> str:
    message = str(exc.value if isinstance(exc, pytest.ExceptionInfo) else exc)
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
    assert (store / "tip" / "aliases.json").stat().st_mode & 0o777 == 0o644  # readable by other users


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


def test_save_model_writes_the_checksum_and_keeps_a_version_already_stored(store, tmp_path):
    tip = load_model("tip", models_dir=store)
    meta = {k: v for k, v in tip.metadata.items() if k not in ("checksum", "created")}
    path = save_model(tip.estimator, {**meta, "version": "vsaved"}, tmp_path / "s")
    saved = json.loads((path / "metadata.json").read_text())
    assert saved["checksum"] == checksum(path / "model.joblib") and saved["created"].endswith("Z")
    (path / "metadata.json").write_text(json.dumps({**saved, "created": "2020-01-01T00:00:00Z"}))
    again = save_model(tip.estimator, {**meta, "version": "vsaved"}, tmp_path / "s")  # the same id: kept
    assert again == path and json.loads((path / "metadata.json").read_text())["created"] == "2020-01-01T00:00:00Z"
    (path / "model.joblib").write_bytes(b"damaged")  # unless it is damaged: then written again
    save_model(tip.estimator, {**meta, "version": "vsaved"}, tmp_path / "s")
    assert check_artifact(path)["created"] != "2020-01-01T00:00:00Z"


def test_a_corrupt_artifact_is_refused_with_one_line(store):
    path = resolve("tip", None, store)
    data = bytearray((path / "model.joblib").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped
    (path / "model.joblib").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model tip v\w+ is corrupt: model.joblib does not match the checksum in "
                                         r"its metadata \(sha256 \w+…, expected \w+…\); copy the artifact again "
                                         r"or retrain") as exc:
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


# --- candidates and training's registration ----------------------------------------------------

def test_the_distance_only_candidate_is_a_proper_worse_artifact(store):
    from training.candidates import distance_only

    path = distance_only("tip", store)
    assert registry.aliases("tip", store)["challenger"] == path.name  # the champion stays
    worse, champion = load_model("tip", "challenger", store), load_model("tip", models_dir=store)
    assert worse.metadata["features"] == list(champion.metadata["features"])  # fed the full matrix
    assert worse.metadata["checksum"] == checksum(path / "model.joblib")
    assert worse.metadata["estimator"] == "distance-only-linear"
    assert type(worse.estimator).__module__.startswith("sklearn.")  # unpickles in any process
    assert worse.metadata["metrics"]["mae"] > champion.metadata["metrics"]["mae"] * 1.5
    probe = probe_features("tip")[:300]
    shuffled = probe.copy()
    shuffled[:, 1:] = shuffled[::-1, 1:]  # every column but the distance
    assert (worse.estimator.predict(probe) == worse.estimator.predict(shuffled)).all()
    assert len(np.unique(worse.estimator.predict(probe))) > 100
    assert distance_only("tip", store) == path  # the same candidate again: the same version, kept


def test_no_distance_only_candidate_of_the_dynamic_model(store):
    from training.candidates import distance_only

    with pytest.raises(ModelError, match="only for initial_duration, tip, cost"):
        distance_only("dynamic_duration", store)


def test_training_a_subset_needs_the_other_champions(tmp_path):
    from training.train import TrainConfig, chosen_models, train

    assert chosen_models(None) == ("initial_duration", "tip", "cost", "dynamic_duration")
    assert chosen_models(["cost", " tip"]) == ("tip", "cost")
    with pytest.raises(ModelError, match="unknown model 'fare': choose from"):
        chosen_models(["fare"])
    with pytest.raises(ModelError, match="training only tip builds on the other models' champions, but no current "
                                         "initial_duration model") as exc:
        train(TrainConfig(), tmp_path / "empty", models=["tip"])
    one_line(exc)


# --- the command line ------------------------------------------------------------------------

def invoke(*args: str):
    from typer.testing import CliRunner

    from ridestream.cli import app

    return CliRunner().invoke(app, list(args))


def test_models_list_and_show(store):
    add_version(store, "tip", "vnew")
    registry.register("tip", "vnew", store)
    listed = invoke("models", "list", "--store", str(store))
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.output.splitlines()]
    assert ["tip", (store / "tip" / "CURRENT").read_text().strip(), "0.726"] == rows[[r[:1] for r in rows].index(["tip"])][:3]
    assert any(r[:1] == ["vnew"] and r[-1] == "challenger" and "ok" in r for r in rows)
    shown = invoke("models", "show", "tip", "--store", str(store))
    assert shown.exit_code == 0, shown.output
    assert "challenger → vnew" in shown.output and "hgb-absolute" in shown.output and "seed 42" in shown.output
    empty = invoke("models", "list", "--store", str(store / "nothing"))
    assert empty.exit_code == 0 and "no models in" in empty.output


def test_models_alias_sets_moves_and_deletes(store):
    add_version(store, "tip", "vnew")
    champion = (store / "tip" / "CURRENT").read_text().strip()
    result = invoke("models", "alias", "tip", "challenger", "vnew", "--store", str(store))
    assert result.exit_code == 0 and "tip: challenger → vnew" in result.output
    result = invoke("models", "alias", "tip", "champion", "challenger", "--store", str(store))
    assert result.exit_code == 0 and f"tip: champion → vnew (was {champion})" in result.output
    assert (store / "tip" / "CURRENT").read_text() == "vnew\n"
    result = invoke("models", "alias", "tip", "challenger", "--delete", "--store", str(store))
    assert result.exit_code == 0 and "challenger deleted (it named vnew)" in result.output
    assert registry.aliases("tip", store) == {"champion": "vnew"}


@pytest.mark.parametrize("args, message", [
    (("alias", "fare", "challenger", "v1"), "no model 'fare' in"),
    (("alias", "tip", "challenger", "vnope"), "model tip has no version or alias 'vnope'"),
    (("alias", "tip", "Bad-Name", "champion"), "bad alias name 'Bad-Name'"),
    (("alias", "tip", "champion", "--delete"), "the champion alias cannot be deleted"),
    (("alias", "tip", "canary", "--delete"), "model tip has no alias 'canary'"),
    (("alias", "tip", "canary"), "which version should canary name?"),
    (("show", "fare"), "no model 'fare' in"),
])
def test_models_bad_input_is_one_line_and_exit_1(store, args, message):
    result = invoke("models", *args, "--store", str(store))
    assert result.exit_code == 1
    assert isinstance(result.exception, RidestreamError) and message in one_line(result.exception)


def test_the_program_prints_the_one_line_without_a_traceback(store, monkeypatch, capsys):
    from ridestream import cli

    monkeypatch.setattr("sys.argv", ["ridestream", "models", "alias", "tip", "challenger", "vnope",
                                     "--store", str(store)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: model tip has no version or alias 'vnope'")


def test_models_commands_use_the_store_setting(store, monkeypatch):
    monkeypatch.setenv("RIDESTREAM_MODEL_STORE", str(store))
    add_version(store, "cost", "vnew")
    assert invoke("models", "alias", "cost", "challenger", "vnew").exit_code == 0
    assert registry.aliases("cost", store)["challenger"] == "vnew"


def test_train_worse_through_the_command_line(store):
    result = invoke("train", "--worse", "--models", "tip", "--store", str(store))
    assert result.exit_code == 0, result.output
    challenger = registry.aliases("tip", store)["challenger"]
    assert load_model("tip", challenger, store).metadata["estimator"] == "distance-only-linear"
    assert "the champions stay" in result.output
    result = invoke("train", "--worse", "--models", "dynamic_duration", "--store", str(store))
    assert result.exit_code == 1 and "request-time models only" in str(result.exception)
