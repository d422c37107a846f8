"""The local broker's failures are one-line errors that say what to do (no JVM needed here)."""

from __future__ import annotations

import socket

import pytest

from broker import local
from broker.local import BrokerError, LocalBroker, free_port


def test_missing_java_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"java not found: install a JDK 17\+.*KAFKA_BOOTSTRAP_SERVERS"):
        LocalBroker(tmp_path / "home", port=free_port(), controller_port=free_port()).start()


def test_missing_maven_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="mvn not found: install Maven"):
        local.fetch_jars(tmp_path / "lib")


def test_a_taken_port_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "_java", lambda: "java")
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = LocalBroker(tmp_path / "home", port=port, controller_port=free_port())
        with pytest.raises(BrokerError, match=f"port {port} is taken by another process"):
            broker.start()


def test_status_of_a_broker_that_never_ran(tmp_path):
    broker = LocalBroker(tmp_path / "home")
    assert broker.pid() is None and not broker.is_running()
    assert broker.stop() is False
    (tmp_path / "home").mkdir()
    broker.pid_file.write_text("1")  # a stale pid file pointing at an unrelated process
    assert broker.pid() is None
