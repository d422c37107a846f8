"""deploy/prometheus and deploy/grafana: the configuration and rules pass promtool, every alert
has its `promtool test rules` cases and they pass, the dashboards are valid dashboard JSON whose
every expression parses and names only metrics the fleet exports (the exposition of a service's
and the evaluator's own registries here; tests/integration/test_monitoring.py scrapes running ones)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from consumers.drift import DriftMonitor
from consumers.evaluator import EvaluatorMetrics
from consumers.metrics import ServiceMetrics
from shared.ml.artifacts import load_model
from shared.ml.features import request_columns

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
ALERTS = {"ConsumerLagGrowing", "NoPredictionsWhileEventsFlow", "DeadLetterRateHigh", "EndToEndLatencyHigh",
          "FeatureDrift", "OnlineMAEAboveTrained", "ReplicaDown"}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's prometheus "
                                    "package; `make test` installs it where it runs as root)")
PROMQL_WORDS = {"sum", "by", "max", "min", "count", "rate", "deriv", "histogram_quantile", "label_replace", "and",
                "or", "unless", "on", "ignoring", "group_left", "group_right", "le", "up", "without", "avg"}


def rules() -> list[dict]:
    return [r for f in sorted((PROMETHEUS / "rules").glob("*.yml"))
            for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


def dashboards() -> dict[str, dict]:
    return {f.name: json.loads(f.read_text()) for f in sorted((GRAFANA / "dashboards").glob("*.json"))}


def expressions() -> list[str]:
    return [t["expr"] for d in dashboards().values() for p in d["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric and recording-rule names an expression reads (not functions, labels or strings)."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d+", n)}


def exported_names() -> set[str]:
    """Every metric name a service (with drift on) and the evaluator expose, histogram series included."""
    service = ServiceMetrics("tip")
    service.events("ride_requested").inc()
    service.dead_letters("invalid_json").inc()
    service.lag_of(0).set(1)
    service.model_info.labels("tip", "tip", "v").set(1)
    service.batches.observe(1)
    service.scoring.observe(0.01)
    service.end_to_end.observe(0.01)
    drift = DriftMonitor("tip", service.registry)
    model = load_model("tip")
    model = type(model)(model.name, model.version, model.estimator, model.metadata, model.path)  # its own observers
    drift.watch([model])
    from shared.data import simulator
    from shared.data.tlc import sample_trips

    model.predict_columns(request_columns(simulator.simulate(simulator.fit(sample_trips()), 200, seed=1)))
    evaluator = EvaluatorMetrics()
    evaluator.mae.labels("tip", "v", "stable", "request").set(1)
    evaluator.sd.labels("tip", "v", "stable", "request").set(1)
    evaluator.samples.labels("tip", "v", "stable", "request").set(1)
    evaluator.expired.labels("ttl").inc()
    evaluator.malformed.labels("t").inc()
    text = (generate_latest(service.registry) + generate_latest(evaluator.registry)).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")} | {"up"}


@needs_promtool
def test_the_configuration_and_rules_pass_promtool():
    proc = subprocess.run([PROMTOOL, "check", "config", str(PROMETHEUS / "prometheus.yml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_the_alert_cases_pass_promtool_test_rules():
    files = sorted((PROMETHEUS / "tests").glob("*.yml"))
    proc = subprocess.run([PROMTOOL, "test", "rules", *map(str, files)], capture_output=True, text=True, cwd=PROMETHEUS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_the_issue_names_exists_and_has_a_firing_and_a_quiet_case():
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts == ALERTS
    cases: dict[str, list[bool]] = {}
    for f in (PROMETHEUS / "tests").glob("*.yml"):
        for test in yaml.safe_load(f.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    for alert in ALERTS:
        assert True in cases.get(alert, []), f"{alert} has no case where it fires"
    psi = next(r for r in rules() if r.get("alert") == "FeatureDrift")
    assert "0.25" in psi["expr"] and psi["for"] == "15m"  # the shipped rule keeps realistic values


def test_the_dashboards_are_valid_dashboard_models():
    found = dashboards()
    assert set(found) == {"fleet.json", "models.json"}
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "ridestream.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    titles = {d["uid"]: [p["title"] for p in d["panels"]] for d in found.values()}
    for d in found.values():
        assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        for p in d["panels"]:
            assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            assert p["datasource"]["uid"] == uid and p["targets"]
            assert all(t["datasource"]["uid"] == uid and t["expr"].strip() for t in p["targets"])
    fleet = " ".join(titles["ridestream-fleet"]).lower()
    for wanted in ("events in", "predictions out", "lag", "batch size", "scoring time", "end-to-end", "dlq", "replicas"):
        assert wanted in fleet
    models = " ".join(titles["ridestream-models"]).lower()
    for wanted in ("version serving", "variant", "online mae", "psi"):
        assert wanted in models


@needs_promtool
def test_every_dashboard_expression_parses(tmp_path: Path):
    exprs = expressions()
    rules_file = tmp_path / "exprs.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    proc = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(exprs)} rules found" in proc.stdout
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x", "expr": "sum by (("}]}]}))
    assert subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True).returncode != 0


def test_every_metric_the_dashboards_and_rules_read_is_exported_or_recorded():
    recorded = {r["record"] for r in rules() if "record" in r}
    exported = exported_names()
    assert "ridestream_feature_psi" in exported and "ridestream_prediction_value_bucket" in exported
    used = {n for e in expressions() + [r["expr"] for r in rules()] for n in metric_names(e)}
    unknown = used - exported - recorded
    assert not unknown, f"not exported by the fleet: {sorted(unknown)}"
    assert metric_names('sum by (service) (rate(ridestream_x_total{a="b"}[5m])) / on (le) y:z') == {"ridestream_x_total", "y:z"}
