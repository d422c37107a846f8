"""One settings object, one converter to librdkafka configuration."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.kafka.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("KAFKA_BOOTSTRAP_SERVERS",):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_use_the_local_broker_and_the_contract_names():
    s = load_settings()
    assert s.uses_local_broker and s.bootstrap == "localhost:9092"
    assert s.topics.all() == [
        "rides.events", "rides.predictions.duration", "rides.predictions.tip",
        "rides.predictions.cost", "rides.events.dlq", "rides.control", "rides.control.audit", "rides.model_quality",
        "rides.backend.state", "ridestream-duration-state-changelog",
    ]
    assert s.topics.shadow("tip") == "rides.predictions.tip.shadow"
    assert s.group_id("tip") == "ridestream-tip" and s.group_id("tip", "green") == "ridestream-tip-green"
    assert s.kafka_config() == {
        "bootstrap.servers": "localhost:9092", "client.id": "ridestream", "security.protocol": "PLAINTEXT",
    }


def test_kafka_bootstrap_servers_and_the_prefixed_variable(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    assert load_settings().bootstrap == "k1:9092,k2:9092"
    monkeypatch.setenv("RIDESTREAM_BOOTSTRAP_SERVERS", "other:9092")
    assert load_settings().bootstrap == "other:9092"


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("RIDESTREAM_EVENTS_PARTITIONS=12\nRIDESTREAM_NAMESPACE=dev.\n")
    s = load_settings()
    assert s.events_partitions == 12
    assert s.topics.events == "dev.rides.events" and s.group_id("cost") == "dev.ridestream-cost"


def test_sasl_and_tls_become_librdkafka_settings(monkeypatch):
    monkeypatch.setenv("RIDESTREAM_BOOTSTRAP_SERVERS", "broker.example:9093")
    monkeypatch.setenv("RIDESTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RIDESTREAM_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RIDESTREAM_SASL_USERNAME", "fleet")
    monkeypatch.setenv("RIDESTREAM_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("RIDESTREAM_SSL_CA_LOCATION", "/etc/ssl/ca.pem")
    monkeypatch.setenv("RIDESTREAM_KAFKA_EXTRA", '{"socket.keepalive.enable": "true"}')
    s = load_settings()
    assert "s3cret" not in repr(s)
    assert s.kafka_config(**{"linger.ms": 1}) == {
        "bootstrap.servers": "broker.example:9093", "client.id": "ridestream",
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "fleet", "sasl.password": "s3cret", "ssl.ca.location": "/etc/ssl/ca.pem",
        "socket.keepalive.enable": "true", "linger.ms": 1,
    }


def test_topic_specs_follow_the_settings():
    specs = Settings(events_partitions=9, retention_hours=2, _env_file=None).topic_specs()
    assert [(s.name, s.partitions) for s in specs][0] == ("rides.events", 9)
    assert {s.retention_ms for s in specs if not s.compacted} == {2 * 3600 * 1000}
    assert [s.name for s in specs if s.compacted] == ["rides.control", "rides.model_quality", "rides.backend.state",
                                                      "ridestream-duration-state-changelog"]
    for name in ("rides.backend.state", "ridestream-duration-state-changelog"):  # partitioned like rides.events
        assert next(s for s in specs if s.name == name).partitions == 9
    policies = {s.name: s.new_topic().config for s in specs if s.compacted}
    assert {policies[name]["cleanup.policy"] for name in ("rides.control", "rides.model_quality",
                                                           "ridestream-duration-state-changelog")} == {"compact"}
    # the web backend's table also forgets finished rides and old idempotency keys (7 days by default)
    assert policies["rides.backend.state"]["cleanup.policy"] == "compact,delete"
    assert policies["rides.backend.state"]["retention.ms"] == str(7 * 24 * 3600 * 1000)
    kept = Settings(backend_state_retention_hours=0, _env_file=None).topic_specs()
    assert next(s for s in kept if s.name == "rides.backend.state").new_topic().config["cleanup.policy"] == "compact"
    forever = Settings(retention_hours=0, _env_file=None).topic_specs()
    assert {s.retention_ms for s in forever if not s.compacted} == {-1}


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("RIDESTREAM_EVENTS_PARTITIONS", "many", "RIDESTREAM_EVENTS_PARTITIONS"),
        ("RIDESTREAM_EVENTS_PARTITIONS", "0", "greater than or equal to 1"),
        ("RIDESTREAM_SECURITY_PROTOCOL", "TLS", "RIDESTREAM_SECURITY_PROTOCOL"),
        ("RIDESTREAM_BROKER_HEAP", "lots", "RIDESTREAM_BROKER_HEAP"),
    ],
)
def test_invalid_settings_give_one_line_errors(monkeypatch, var, value, fragment):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_keyword_arguments_override_the_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    assert Settings(bootstrap_servers="given:1234", _env_file=None).bootstrap == "given:1234"


def test_kafka_extra_tunes_the_producer_but_cannot_weaken_its_guarantees(monkeypatch):
    from shared.kafka.clients import PRODUCER_TUNING, producer_config

    assert producer_config(Settings())["linger.ms"] == PRODUCER_TUNING["linger.ms"]
    monkeypatch.setenv("RIDESTREAM_KAFKA_EXTRA", '{"linger.ms": "0", "compression.type": "zstd", "acks": "1", '
                                                 '"enable.idempotence": "false"}')
    conf = producer_config(load_settings())
    assert conf["linger.ms"] == "0" and conf["compression.type"] == "zstd"  # the user's tuning wins
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True  # at-least-once stays
    assert conf["batch.size"] == PRODUCER_TUNING["batch.size"]
    assert producer_config(load_settings(), **{"linger.ms": 1})["linger.ms"] == 1  # a caller's own choice wins


def test_consumers_fetch_again_soon_under_a_backlog_unless_the_user_tunes_it(monkeypatch):
    from shared.kafka.clients import CONSUMER_TUNING, consumer_config

    conf = consumer_config(Settings(), "g")
    assert conf["fetch.queue.backoff.ms"] == CONSUMER_TUNING["fetch.queue.backoff.ms"] < 1000  # librdkafka's 1 s
    assert conf["queued.min.messages"] == CONSUMER_TUNING["queued.min.messages"]
    monkeypatch.setenv("RIDESTREAM_KAFKA_EXTRA", '{"fetch.queue.backoff.ms": "250", "enable.auto.commit": "true"}')
    conf = consumer_config(load_settings(), "g")
    assert conf["fetch.queue.backoff.ms"] == "250" and conf["enable.auto.commit"] is False  # commits stay ours
