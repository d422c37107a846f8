"""The main job, as the README's first command runs it: the whole fleet, live, stopped cleanly."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC

from broker.local import free_port
from tests.integration.fleet import RIDESTREAM


def test_run_starts_the_backend_and_the_services_and_stops_cleanly(kafka):
    web_port = free_port()
    proc = subprocess.run([*RIDESTREAM, "run", "--duration", "25", "--rate", "300", "--replicas", "tip=2",
                           "--metrics-port", "0", "--web-port", str(web_port)],
                          env={**kafka.env(), "COLUMNS": "160"}, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stopped cleanly" in proc.stdout
    assert f"rider page http://127.0.0.1:{web_port}/" in proc.stdout  # the web service ran and stopped cleanly too
    for service in ("duration", "tip", "cost"):
        row = re.search(rf"{service} predictions\s*│\s*[\d,.]+\s*│\s*([\d,]+)\s*│\s*([\d,]+)\s*│\s*(\d)/(\d) running", proc.stdout)
        assert row, proc.stdout
        assert int(row.group(1).replace(",", "")) > 0  # it scored
    assert re.search(r"tip predictions.*0/2 running", proc.stdout)  # both replicas ran, both stopped
    assert "Traceback" not in proc.stdout + proc.stderr


def test_watch_shows_a_rides_estimates_corrections_tip_and_cost(kafka):
    from datetime import datetime

    from shared.contract.codec import encode_dict
    from shared.kafka.clients import make_producer

    kafka.create_contract_topics()
    t = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    base = {"schema_version": 1, "ride_id": "ride-42", "event_time": t, "scored_at": t, "model_version": "v1"}
    preds = [
        ("duration", {"event_id": "e1", "value": 12.0, "unit": "min", "initial": True}),
        ("duration", {"event_id": "e1", "value": 12.5, "unit": "min"}),
        ("duration", {"event_id": "e3", "value": 14.0, "unit": "min", "remaining_min": 9.0}),
        ("tip", {"event_id": "e1", "value": 2.35, "unit": "usd"}),
        ("cost", {"event_id": "e1", "value": 14.8, "unit": "usd"}),
    ]
    producer = make_producer(kafka.settings)
    for service, p in preds:
        producer.produce(kafka.settings.topics.predictions(service), key=b"ride-42",
                         value=encode_dict({**base, **p, "service": service, "prediction_id": p["event_id"] + service}))
    assert producer.flush(30) == 0
    proc = subprocess.run([*RIDESTREAM, "watch", "--ride", "ride-42", "--seconds", "6"],
                          env={**kafka.env(), "COLUMNS": "160"}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "ride-42" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells == ["ride-42", "12.0 min", "14.0 min", "9.0 min", "1", "$2.35", "$14.80"]
