"""A three-node KRaft cluster losing nodes under a running service: a partition leader killed
mid-stream, the active controller killed, two of three nodes down. One cluster for the module,
on free ports in a temporary directory; each test has its own namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from broker.cluster import LocalCluster
from broker.local import free_port
from producer.sources import simulated
from shared.contract.codec import encode_dict
from shared.contract.topics import TopicSpec, create_topics, describe_topics
from shared.errors import TopicError
from shared.kafka.clients import make_admin, make_producer
from shared.kafka.settings import Settings
from tests.conftest import KafkaTestEnv
from tests.integration.fleet import RIDESTREAM, Fleet, fleet_env, publish, read_all, values, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("java") is None, reason="the local cluster needs java")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), [(free_port(), free_port()) for _ in range(3)],
                     heap="384m")
    c.start(fresh=True)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def kafka(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> KafkaTestEnv:
    """As the session's ``kafka`` fixture, on this module's cluster (every node restarted first)."""
    for node in cluster.nodes:
        if not node.is_running():
            node.start()
    for var in [v for v in os.environ if v.startswith("RIDESTREAM_")]:
        monkeypatch.delenv(var)
    return KafkaTestEnv(Settings(bootstrap_servers=cluster.bootstrap, namespace=f"t{uuid.uuid4().hex[:10]}.",
                                 events_partitions=3, predictions_partitions=3, retention_hours=0, _env_file=None))


@pytest.fixture
def fleet(kafka: KafkaTestEnv) -> Iterator[Fleet]:
    kafka.create_contract_topics()
    f = Fleet(fleet_env(kafka.env()))
    yield f
    f.close()


def test_cli_starts_stops_and_describes_every_node(tmp_path: Path):
    """First in the module, before its own cluster starts: two clusters at once are six JVMs."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS" and not k.startswith("RIDESTREAM_")}
    port, controller = free_port(), free_port()
    env |= {"RIDESTREAM_STATE_DIR": str(tmp_path), "RIDESTREAM_BROKER_PORT": str(port),
            "RIDESTREAM_BROKER_CONTROLLER_PORT": str(controller), "RIDESTREAM_BROKER_HEAP": "384m"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*RIDESTREAM, "broker", *args], env=env, capture_output=True, text=True, timeout=300)

    try:
        started = cli("start", "--nodes", "3")
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip().splitlines()[-1] == f"localhost:{port},localhost:{port + 2},localhost:{port + 4}"
        status = cli("status")
        assert status.returncode == 0 and status.stdout.count("answering on") == 3, status.stdout
        assert "active controller: node" in status.stdout
        logs = cli("logs", "-n", "2")
        assert [line for line in logs.stdout.splitlines() if line.startswith("==> node")] == [
            f"==> node {i}: {tmp_path}/cluster/node-{i}/broker.log <==" for i in (1, 2, 3)]
    finally:
        stopped = cli("stop")
    assert stopped.stdout.strip() == "stopped: node 1, node 2, node 3"
    assert cli("status").returncode == 3


def requests_of(events: list[dict]) -> set[str]:
    return {e["event_id"] for e in events if e["event_type"] == "ride_requested"}


def tip_predictions(kafka: KafkaTestEnv) -> list[dict] | None:
    """What the tip service predicted so far; None while the cluster cannot say (a partition
    whose leader is moving)."""
    try:
        return values(read_all(kafka.settings, kafka.settings.topics.predictions("tip"), timeout=20))
    except (KafkaException, AssertionError):
        return None


def answered(kafka: KafkaTestEnv, event_ids: set[str]) -> bool:
    """Every one of ``event_ids`` has a tip prediction."""
    return event_ids <= {p["event_id"] for p in tip_predictions(kafka) or [] if not p.get("initial")}


def leaders(kafka: KafkaTestEnv, topics: list[str]) -> dict[tuple[str, int], tuple[int, list[int]]]:
    meta = make_admin(kafka.settings).list_topics(timeout=10).topics
    return {(t, p): (part.leader, list(part.isrs)) for t in topics for p, part in meta[t].partitions.items()}


def test_topics_get_three_replicas_and_two_in_sync_on_three_brokers(kafka):
    created = subprocess.run([*RIDESTREAM, "topics", "create"], env=kafka.env(), capture_output=True, text=True,
                             timeout=120)
    assert created.returncode == 0, created.stderr
    infos = describe_topics(make_admin(kafka.settings), kafka.settings.topics.all())
    assert {(i.replicas, i.min_insync_replicas) for i in infos} == {(3, 2)}


def test_partition_leader_sigkilled_mid_stream_loses_no_prediction_and_rejoins(cluster, kafka, fleet):
    t = kafka.settings.topics
    topics = [t.events, t.predictions("tip")]
    proc = fleet.start("tip")
    sent: list[dict] = []
    feeder = threading.Thread(target=lambda: sent.extend(publish(kafka.settings, rides=300, seed=11, rate=250)))
    feeder.start()
    assert wait_for(lambda: len(tip_predictions(kafka) or []) >= 30, timeout=120), fleet.output()
    # the node leading the most partitions the service is reading and writing right now
    counts: dict[int, int] = {}
    for leader, _ in leaders(kafka, topics).values():
        counts[leader] = counts.get(leader, 0) + 1
    victim = max(counts, key=counts.get)
    cluster.node(victim).kill()
    feeder.join(300)
    assert not feeder.is_alive()
    requests = requests_of(sent)
    assert len(requests) == 300  # the backend's every event was acknowledged (publish checks it)
    assert wait_for(lambda: answered(kafka, requests), timeout=240), fleet.output()
    assert proc.poll() is None  # the service went on by itself
    assert all(leader != victim for leader, _ in leaders(kafka, topics).values())

    cluster.node(victim).start()
    assert wait_for(lambda: all(victim in isrs for _, isrs in leaders(kafka, topics).values()), timeout=240)
    assert fleet.terminate(proc) == 0


def test_active_controller_killed_a_new_one_takes_over(cluster, kafka):
    assert wait_for(lambda: cluster.active_controller() is not None, timeout=60)
    before = cluster.quorum_status()
    old = cluster.node(before["leader"])
    old.kill()
    assert wait_for(lambda: cluster.quorum_status().get("epoch", 0) > before["epoch"]
                    and cluster.active_controller() not in (None, before["leader"]), timeout=120)
    # metadata changes go through the new controller (once the brokers stop sending them to the
    # dead node: a KRaft broker names any live broker as "the controller" to clients)
    name = f"{kafka.settings.namespace}after-failover"

    def created() -> bool:
        try:
            spec = TopicSpec(name, 3, replication_factor=2)  # on the two nodes left
            return create_topics(make_admin(kafka.settings), [spec], timeout=10)[name] in ("created", "exists")
        except TopicError:
            return False

    assert wait_for(created, timeout=120)
    partitions = make_admin(kafka.settings).list_topics(name, timeout=10).topics[name].partitions.values()
    assert [len(p.replicas) for p in partitions] == [2, 2, 2]
    new = cluster.quorum_status()
    old.start()  # it rejoins as a follower of the new leader
    assert wait_for(lambda: (old.quorum_state().get("leaderId"), old.quorum_state().get("leaderEpoch", -1))
                    == (new["leader"], new["epoch"]) or old.quorum_state().get("leaderEpoch", -1) > new["epoch"],
                    timeout=120)


def test_two_of_three_down_nothing_acknowledged_is_lost_and_the_service_recovers(cluster, kafka, fleet):
    proc = fleet.start("tip")
    first = publish(kafka.settings, rides=40, seed=21)
    assert wait_for(lambda: answered(kafka, requests_of(first)), timeout=120), fleet.output()

    down = [n for n in cluster.nodes if n.node_id != 1]
    for node in down:
        node.kill()
    # acks=all with min.insync.replicas 2 and one node left: refused, or never acknowledged
    producer = make_producer(kafka.settings, **{"message.timeout.ms": 15000})
    during = [e for _, events in simulated(20, seed=22, id_prefix="during") for e in events]
    outcome: dict[str, bool] = {}
    for e in during:
        producer.produce(kafka.settings.topics.events, key=e["ride_id"].encode(), value=encode_dict(e),
                         on_delivery=lambda err, msg, eid=e["event_id"]: outcome.__setitem__(eid, err is None))
    producer.flush(120)
    acked = {eid for eid, ok in outcome.items() if ok}
    assert len(outcome) == len(during) and len(acked) < len(during)
    # a backend started now waits for the cluster instead of failing, and so does the service
    after: list[dict] = []
    feeder = threading.Thread(target=lambda: after.extend(publish(kafka.settings, rides=40, seed=23,
                                                                  id_prefix="after")))
    feeder.start()
    assert proc.poll() is None

    for node in down:
        node.start()
    feeder.join(300)
    assert not feeder.is_alive() and len(requests_of(after)) == 40
    expected = requests_of(first) | requests_of(after) | (requests_of(during) & acked)
    assert wait_for(lambda: answered(kafka, expected), timeout=240), fleet.output()
    stored = {e["event_id"] for e in values(read_all(kafka.settings, kafka.settings.topics.events))}
    assert acked <= stored  # nothing acknowledged was lost
    assert proc.poll() is None
    assert fleet.terminate(proc) == 0
