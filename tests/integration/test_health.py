"""/healthz and /readyz of a service on a real broker: ready once in its group (even with no
partitions), and liveness failing while the consume loop is held still."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

from broker.local import free_port
from consumers.runtime import Runtime
from consumers.services import TIP
from shared.contract.topics import create_topics
from shared.kafka.clients import make_admin
from shared.ml.artifacts import load_model
from tests.integration.fleet import publish, wait_for


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Replica:
    """A tip runtime in a thread, serving /metrics, /healthz and /readyz on a port of its own."""

    def __init__(self, settings, observe=None):
        self.runtime = Runtime(TIP, settings, {"tip": load_model("tip")}, observe=observe)
        self.port = free_port()
        self.server = self.runtime.metrics.serve(self.port, self.runtime.health)
        self.thread = threading.Thread(target=self.runtime.run, daemon=True)

    def status(self, path: str) -> int:
        return probe(self.port, path)[0]

    def stop(self) -> None:
        self.runtime.stop()
        self.thread.join(60)
        self.server.shutdown()


def test_ready_after_joining_and_healthz_fails_while_the_loop_is_held(kafka):
    kafka.create_contract_topics()
    hold, holding, release = threading.Event(), threading.Event(), threading.Event()

    def observe(events):  # the loop's own hook: it blocks the loop until the test lets go
        if hold.is_set():
            holding.set()
            release.wait()
    settings = kafka.settings.model_copy(update={"stall_timeout_s": 1.0, "native_models": False})
    replica = Replica(settings, observe)
    try:
        code, why = probe(replica.port, "/readyz")
        assert code == 503 and "not joined" in why  # served before the loop runs: not ready yet
        replica.thread.start()
        assert wait_for(lambda: replica.status("/readyz") == 200, timeout=60), probe(replica.port, "/readyz")
        assert replica.status("/healthz") == 200
        assert probe(replica.port, "/metrics")[1].count("ridestream_model_info") >= 1

        hold.set()  # the next batch stops the loop inside it
        publish(kafka.settings, rides=5, seed=3)
        assert holding.wait(60)
        assert wait_for(lambda: replica.status("/healthz") == 503, timeout=30)
        code, why = probe(replica.port, "/healthz")
        assert "has not come round" in why
        assert replica.status("/readyz") == 503  # no statistics while the loop does not poll

        hold.clear()
        release.set()
        assert wait_for(lambda: replica.status("/healthz") == 200, timeout=30)
        assert wait_for(lambda: replica.status("/readyz") == 200, timeout=30)
    finally:
        release.set()
        replica.stop()


def test_a_member_with_no_partitions_is_ready(kafka):
    """Two replicas on a one-partition topic: one owns it, the other (a surge pod) owns nothing
    and is ready all the same."""
    settings = kafka.settings.model_copy(update={"events_partitions": 1, "native_models": False})
    create_topics(make_admin(settings), settings.topic_specs())
    replicas = [Replica(settings), Replica(settings)]
    try:
        for r in replicas:
            r.thread.start()
        assert wait_for(lambda: all(r.status("/readyz") == 200 for r in replicas), timeout=90), \
            [probe(r.port, "/readyz") for r in replicas]
        answers = sorted(probe(r.port, "/readyz") for r in replicas)
        assert answers == [(200, "ok (0 partitions)\n"), (200, "ok (1 partitions)\n")]
    finally:
        for r in replicas:
            r.stop()
