"""The local broker's generated configuration (no JVM): one node exactly as before, a cluster's
quorum and replication, the --secure settings, and the topics' replication by cluster size."""

from __future__ import annotations

from pathlib import Path

from broker.cluster import LocalCluster, kafka_uuid
from broker.local import LocalBroker
from broker.secure import Secrets
from shared.contract.topics import TopicSpec
from shared.kafka.settings import Settings

SINGLE_NODE_BEFORE = {  # what the single-node broker has always been configured with
    "process.roles": "broker,controller", "node.id": "1", "controller.quorum.bootstrap.servers": "localhost:9093",
    "listeners": "PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093",
    "advertised.listeners": "PLAINTEXT://localhost:9092", "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "offsets.topic.replication.factor": "1", "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1", "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}


def properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_single_node_is_configured_as_it_always_was(tmp_path):
    broker = LocalBroker(tmp_path)
    broker._write_config()
    conf = properties(broker.config_file)
    assert {k: conf[k] for k in SINGLE_NODE_BEFORE} == SINGLE_NODE_BEFORE
    assert "authorizer.class.name" not in conf


def test_each_node_of_a_cluster_is_a_voter_with_three_replicas_of_internal_topics(tmp_path):
    cluster = LocalCluster.layout(tmp_path, 3, 19092, 19093)
    assert cluster.bootstrap == "localhost:19092,localhost:19094,localhost:19096"
    cluster._record()
    for node in cluster.nodes:
        node.home.mkdir(parents=True, exist_ok=True)
        node._write_config()
        conf = properties(node.config_file)
        assert conf["node.id"] == str(node.node_id)
        assert conf["controller.quorum.bootstrap.servers"] == "localhost:19093,localhost:19095,localhost:19097"
        assert conf["offsets.topic.replication.factor"] == "3" and conf["transaction.state.log.min.isr"] == "2"
    assert len({n.cluster_id for n in cluster.nodes}) == 1


def test_a_secure_broker_authenticates_and_authorizes(tmp_path):
    secrets = Secrets(tmp_path / "secrets")
    secrets.dir.mkdir()
    secrets.passwords_file.write_text('{"admin": "pw-admin", "tip": "pw-tip"}')
    broker = LocalBroker(tmp_path, secrets=secrets)
    broker._write_config()
    conf = properties(broker.config_file)
    assert conf["listeners"] == "SASL_SSL://localhost:9092,CONTROLLER://localhost:9093"
    assert conf["listener.security.protocol.map"] == "CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    assert conf["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert conf["allow.everyone.if.no.acl.found"] == "false" and conf["super.users"] == "User:admin"
    assert broker.config_file.stat().st_mode & 0o077 == 0  # it holds the broker's password
    assert secrets.scram_args() == ["--add-scram", "SCRAM-SHA-512=[name=admin,password=pw-admin]",
                                    "--add-scram", "SCRAM-SHA-512=[name=tip,password=pw-tip]"]


def test_kafka_uuids_look_like_kafkas():
    ids = {kafka_uuid() for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_topics_are_replicated_by_cluster_size_unless_set():
    spec = TopicSpec("t", 3)
    one, three = spec.new_topic(1), spec.new_topic(3)
    assert one.replication_factor == 1 and "min.insync.replicas" not in one.config
    assert three.replication_factor == 3 and three.config["min.insync.replicas"] == "2"
    assert TopicSpec("t", 3, replication_factor=1).new_topic(5).replication_factor == 1


def test_settings_find_every_local_node_and_never_show_the_password():
    s = Settings(broker_nodes=3, broker_port=9092, sasl_password="hunter2-secret", _env_file=None)
    assert s.bootstrap == "localhost:9092,localhost:9094,localhost:9096"
    assert "hunter2-secret" not in repr(s) + str(s) + s.model_dump_json()
    assert Settings(_env_file=None).bootstrap == "localhost:9092"
