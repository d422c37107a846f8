"""Shared fixtures. Which broker the integration tests use, in order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` when set (an existing cluster);
2. Testcontainers' Kafka when a Docker engine answers;
3. otherwise ridestream's own local JVM broker (``broker/``), on free ports in a temporary
   directory.

The broker is started once per test session — with pytest-xdist (``-n 2``, as ``make test`` runs)
once by the controller, for all its workers; the ``kafka`` fixture gives each test its own
namespace, so its topics and consumer groups are its own.
"""

from __future__ import annotations

import os

# OpenMP threads (scikit-learn's training and predict) sleep while they wait instead of spinning:
# with two workers on two cores, spinning threads of one test starved the other's (a 40 s
# training test ran past its 10-minute timeout). Before anything imports scikit-learn.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.local import LocalBroker, free_port
from shared.contract.topics import create_topics
from shared.kafka.clients import make_admin
from shared.kafka.settings import Settings

TEST_OUTPUT = Path(__file__).resolve().parent.parent / "test-output"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


_WORKERS_BROKER = "PYTEST_RIDESTREAM_BROKER"  # the controller's broker, for its xdist workers
_broker_key = pytest.StashKey[tuple[LocalBroker, Path]]()


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, the controller starts the one local broker its workers share (they inherit the
    environment it spawns them with): one JVM and one page cache on a 2-core machine, not one per worker."""
    workers = config.getoption("numprocesses", default=None)
    if not workers or hasattr(config, "workerinput") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or _docker_answers():
        return
    home = Path(tempfile.mkdtemp(prefix="ridestream-test-broker-"))
    broker = LocalBroker(home / "session", port=free_port(), controller_port=free_port())
    broker.start(fresh=True)
    config.stash[_broker_key] = (broker, home)
    os.environ[_WORKERS_BROKER] = broker.bootstrap


def pytest_unconfigure(config: pytest.Config) -> None:
    started = config.stash.get(_broker_key, None)
    if started:
        broker, home = started
        broker.stop()
        os.environ.pop(_WORKERS_BROKER, None)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def local_broker_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("brokers")


@pytest.fixture(scope="session")
def kafka_bootstrap(local_broker_home: Path) -> Iterator[str]:
    """The bootstrap address of the session's real Kafka broker."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get(_WORKERS_BROKER)
    if existing:
        yield existing
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.9.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = LocalBroker(local_broker_home / "session", port=free_port(), controller_port=free_port())
    broker.start(fresh=True)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@dataclass
class KafkaTestEnv:
    """One test's slice of the broker: settings whose namespace prefixes every topic and group."""

    settings: Settings

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def create_contract_topics(self) -> dict[str, str]:
        return create_topics(make_admin(self.settings), self.settings.topic_specs())

    def group(self, name: str = "group") -> str:
        return f"{self.settings.namespace}{name}"

    def env(self) -> dict[str, str]:
        """Environment for a ridestream subprocess that should see the same broker and namespace."""
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "RIDESTREAM_NAMESPACE": self.settings.namespace,
            "RIDESTREAM_RETENTION_HOURS": str(self.settings.retention_hours),
        }


@pytest.fixture
def kafka(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> KafkaTestEnv:
    """Settings for this test only: the session broker, a unique namespace, small topics kept
    forever (tests publish rides stamped in 2019, which a 7-day retention deletes at the broker's
    next retention check, in the middle of a test)."""
    for var in [v for v in os.environ if v.startswith("RIDESTREAM_")]:
        monkeypatch.delenv(var)
    namespace = f"t{uuid.uuid4().hex[:10]}."
    settings = Settings(
        bootstrap_servers=kafka_bootstrap, namespace=namespace,
        events_partitions=3, predictions_partitions=3, retention_hours=0, _env_file=None,
    )
    return KafkaTestEnv(settings)
