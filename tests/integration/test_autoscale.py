"""`ridestream run --autoscale` on a real broker: a burst overloads the tip service, the scaler adds
replicas (members of tip's group) as the lag grows and removes them once it has drained and the
short cool-down has passed, and no event is lost."""

from __future__ import annotations

import signal
import subprocess
import time

from confluent_kafka import KafkaException

from broker.local import free_port
from shared.kafka.clients import make_admin
from tests.integration.fleet import RIDESTREAM, failed_children_logs, publish, read_all, values, wait_for


def test_run_autoscale_scales_tip_out_on_a_burst_and_back_in(kafka, tmp_path):
    kafka.create_contract_topics()
    s = kafka.settings
    group = s.group_id("tip")
    sent = publish(s, rides=400, seed=11)  # the burst: waiting before any replica exists
    admin = make_admin(s)

    def members() -> int | None:
        try:
            return len(admin.describe_consumer_groups([group])[group].result(timeout=10).members)
        except (KafkaException, TimeoutError):  # the group's coordinator is not there yet, or slow
            return None

    # the group's coordinator answers before the fleet starts: on a fresh broker it loads for
    # seconds, the scaler reads the lag as unknown meanwhile and changes nothing, and a replica
    # that starts fast can drain the whole burst before the scaler ever sees it (seen in CI)
    assert wait_for(lambda: members() is not None, timeout=60)
    log_path = tmp_path / "run.log"
    # threshold 500 (activation 5) against a burst of thousands of events: 3 = the partitions;
    # a cool-down long enough for the added replicas to join before they are removed
    run = subprocess.Popen([*RIDESTREAM, "run", "--autoscale", "--lag-threshold", "500", "--cooldown", "20",
                            "--rate", "1", "--metrics-port", "0", "--duration", "240",
                            "--web-port", str(free_port())],
                           env={**kafka.env(), "COLUMNS": "160"}, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and run.poll() is None:
            now = members()
            if now is not None:
                seen.append(now)
            if seen and max(seen) >= s.events_partitions and seen[-1] == 1:
                break
            time.sleep(0.5)
        run.send_signal(signal.SIGINT)
        run.wait(120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        output = log_path.read_text()
    assert max(seen) == s.events_partitions, (seen, output[-3000:])  # out to the partitions, no further
    peak = seen.index(max(seen))
    assert seen[-1] == 1 and all(n <= s.events_partitions for n in seen[peak:]), seen  # and back in
    assert run.returncode == 0 and "stopped cleanly" in output, output[-3000:] + failed_children_logs(output)
    requests = {e["event_id"] for e in sent if e["event_type"] == "ride_requested"}
    answered = {p["event_id"] for p in values(read_all(s, s.topics.predictions("tip"))) if not p.get("initial")}
    assert requests <= answered, f"{len(requests - answered)} requests lost"
