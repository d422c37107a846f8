"""A real Prometheus (Debian's package) scraping a running fleet on the real broker: the series the
dashboards and alerts read exist and make sense, and with the drift knob turned the PSI alert goes
pending or firing. The shipped rules are used as they are, but for the PSI alert's ``for:``,
shortened in the test's copy; scrapes and evaluations every second."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from broker.local import free_port
from shared.kafka.clients import flush_all, make_producer
from tests.integration.fleet import RIDESTREAM, Fleet, fleet_env, publish, wait_for
from tests.unit.test_monitoring_files import PROMETHEUS as SHIPPED
from tests.unit.test_monitoring_files import (
    dashboards,
    expressions,
    metric_names,
    rules,
)

PROMETHEUS_BIN = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS_BIN is None, reason="prometheus is not installed (Debian's prometheus "
                                "package; `make test` installs it where it runs as root)")
RIDES = 800


class Prometheus:
    """A Prometheus server on a free port with its own storage, scraping ``targets`` every second."""

    def __init__(self, home: Path, targets: dict[str, list[str]]):
        self.port = free_port()
        rules_dir = home / "rules"
        rules_dir.mkdir(parents=True)
        for f in (SHIPPED / "rules").glob("*.yml"):
            doc = yaml.safe_load(f.read_text())
            for group in doc["groups"]:
                for rule in group["rules"]:
                    if rule.get("alert") == "FeatureDrift":
                        rule["for"] = "2s"  # the shipped 15m would outlast the test
            (rules_dir / f.name).write_text(yaml.safe_dump(doc))
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(rules_dir / "*.yml")],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]} for job, t in targets.items()]}
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(home / "prometheus.log", "w")
        self.proc = subprocess.Popen([PROMETHEUS_BIN, f"--config.file={home / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                                      "--log.level=warn"], stdout=self.log, stderr=subprocess.STDOUT)
        assert wait_for(self.ready, timeout=60), (home / "prometheus.log").read_text()

    def _get(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        answer = self._get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when it has no series."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def names(self) -> set[str]:
        return set(self._get("/api/v1/label/__name__/values")["data"])

    def alerts(self, name: str) -> list[dict]:
        return [a for a in self._get("/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] == name]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture
def monitored(kafka, tmp_path):
    """tip and the online evaluator, with /metrics, scraped by a Prometheus of the test's own."""
    kafka.create_contract_topics()
    env = fleet_env(kafka.env(), RIDESTREAM_DRIFT_WINDOW_S="10")
    fleet = Fleet(env)
    tip, evaluator = free_port(), free_port()
    fleet.start("tip", "--metrics-port", str(tip))
    with open(fleet.logs / "evaluator.log", "w") as log:
        fleet.procs.append(subprocess.Popen([*RIDESTREAM, "evaluate", "--online", "--metrics-port", str(evaluator),
                                             "--window", "120"], env=env, stdout=log, stderr=subprocess.STDOUT))
    prometheus = Prometheus(tmp_path / "prometheus", {"ridestream-services": [f"127.0.0.1:{tip}"],
                                                      "ridestream-evaluator": [f"127.0.0.1:{evaluator}"]})
    yield kafka, fleet, prometheus, env
    prometheus.close()
    fleet.close()


def test_prometheus_sees_the_fleet_and_the_psi_alert_fires_when_the_traffic_drifts(monitored):
    kafka, fleet, prom, env = monitored
    assert wait_for(lambda: prom.value('count(up{job=~"ridestream-.*"} == 1)') == 2, timeout=120), fleet.output()
    sent = publish(kafka.settings, rides=RIDES, seed=5, rate=3000)
    requests = sum(e["event_type"] == "ride_requested" for e in sent)
    producer = make_producer(kafka.settings)  # one bad message: the DLQ series exist
    producer.produce(kafka.settings.topics.events, key=b"r-bad", value=b"{not json")
    flush_all(producer)

    # rates and totals: every request answered, counted as Prometheus saw it
    assert wait_for(lambda: prom.value('ridestream_predictions_out_total{service="tip"}') == requests), fleet.output()
    assert prom.value('ridestream_events_in_total{service="tip",event_type="ride_requested"}') == requests
    assert prom.value('ridestream:predictions_out:rate1m{service="tip"}') > 0
    assert wait_for(lambda: (prom.value('sum(ridestream_dlq_total{service="tip"})') or 0) == 1)
    # lag per partition: one series per partition of rides.events, down to 0 once caught up
    lag = prom.query('ridestream_consumer_lag{service="tip"}')
    assert sorted(s["metric"]["partition"] for s in lag) == ["0", "1", "2"]
    assert wait_for(lambda: prom.value('ridestream:consumer_lag:sum{service="tip"}') == 0)
    # end-to-end latency quantiles from the histogram
    quantile = 'histogram_quantile({q}, sum by (le) (rate(ridestream_end_to_end_seconds_bucket{{service="tip"}}[1m])))'
    p50, p99 = prom.value(quantile.format(q=0.5)), prom.value(quantile.format(q=0.99))
    assert 0 < p50 <= p99 <= 10
    # drift on ordinary traffic: the window filled, no feature shifted, and the predictions' spread in dollars
    assert prom.value('max_over_time(ridestream_drift_window_rows{service="tip"}[2m])') >= 0.8 * requests
    calm = prom.value('max_over_time((max(ridestream_feature_psi{service="tip"}) and on () '
                      'max(ridestream_drift_window_rows{service="tip"}) >= 500)[2m:1s])')  # as the alert reads it
    assert calm is not None and calm < 0.25
    assert not prom.alerts("FeatureDrift")
    median_tip = prom.value('histogram_quantile(0.5, sum by (le) (ridestream_prediction_value_bucket{model="tip"}))')
    assert 0 < median_tip < 10
    assert prom.value('max(ridestream_model_trained_mae{model="tip"})') > 0
    # online quality from the evaluator, joined to the rides' actuals
    assert wait_for(lambda: (prom.value('max(ridestream_online_mae{service="tip"})') or 0) > 0), fleet.output()
    # every metric the dashboards and rules read is one Prometheus now has from the fleet
    used = {n for e in expressions() + [r["expr"] for r in rules()] for n in metric_names(e)}
    assert wait_for(lambda: not used - prom.names(), timeout=30), \
        f"not scraped from the running fleet: {sorted(used - prom.names())}"
    assert dashboards()

    # the knob: the window empties, then airport traffic through `ridestream produce --drift`
    assert wait_for(lambda: prom.value('ridestream_drift_window_rows{service="tip"}') == 0, timeout=60)
    proc = subprocess.run([*RIDESTREAM, "produce", "--drift", "airport-surge", "--rides", str(RIDES), "--rate", "0",
                           "--quiet", "--seed", "11"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert wait_for(lambda: any(a["state"] in ("pending", "firing") for a in prom.alerts("FeatureDrift")),
                    timeout=60), fleet.output()
    shifted = {a["labels"]["feature"] for a in prom.alerts("FeatureDrift")}
    assert shifted & {"distance_mi", "pickup_zone", "dropoff_zone", "pickup_airport", "dropoff_airport"}, shifted
    assert all(a["labels"]["service"] == "tip" and a["labels"]["model"] == "tip" for a in prom.alerts("FeatureDrift"))
