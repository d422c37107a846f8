"""The ``--secure`` broker: SASL/SCRAM-SHA-512 over TLS, the StandardAuthorizer and the fleet's
ACLs. One secure broker for the module (its own ports and directory); every part of the fleet
connects with its own principal, and no password ever shows in a log line or an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from broker.local import LocalBroker, free_port
from broker.secure import ADMIN, Secrets
from shared.contract.topics import create_topics
from shared.kafka.acls import apply_grants, fleet_grants
from shared.kafka.clients import make_admin, make_producer
from shared.kafka.settings import Settings
from tests.integration.fleet import RIDESTREAM, Fleet, fleet_env, publish, read_all, values, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("java") is None or shutil.which("openssl") is None,
                                 reason="the secure local broker needs java and openssl")]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    home = tmp_path_factory.mktemp("secure") / "broker"  # as `ridestream broker` lays it out in a state dir
    b = LocalBroker(home, port=free_port(), controller_port=free_port(), heap="384m", secrets=Secrets(home / "secrets"))
    b.start(fresh=True)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def namespace(broker: LocalBroker) -> str:
    """The module's topics, created by the admin, and the fleet's ACLs on them."""
    ns = f"t{uuid.uuid4().hex[:10]}."
    admin = settings_for(broker, ns, ADMIN)
    create_topics(make_admin(admin), admin.topic_specs())
    apply_grants(make_admin(admin), fleet_grants(admin))
    return ns


def settings_for(broker: LocalBroker, namespace: str, principal: str, password: str | None = None) -> Settings:
    s = broker.secrets
    return Settings(bootstrap_servers=broker.bootstrap, namespace=namespace, events_partitions=3,
                    predictions_partitions=3, retention_hours=0, security_protocol="SASL_SSL",
                    sasl_mechanism="SCRAM-SHA-512", sasl_username=principal,
                    sasl_password=password or s.password(principal), ssl_ca_location=s.ca_file, _env_file=None)


def env_for(broker: LocalBroker, namespace: str, principal: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RIDESTREAM_")}
    return fleet_env({**base, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "RIDESTREAM_NAMESPACE": namespace,
                      "RIDESTREAM_RETENTION_HOURS": "0", **broker.secrets.env(principal), **extra})


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RIDESTREAM, *args], env=env, capture_output=True, text=True, timeout=180)


def assert_no_secret(broker: LocalBroker, *texts: str) -> None:
    passwords = {p: broker.secrets.password(p) for p in broker.secrets.principals()}
    for text in (*texts, broker.log_file.read_text(errors="replace")):
        leaked = [p for p, pw in passwords.items() if pw in text]
        assert not leaked, f"the password of {leaked} appears in a log or an error"


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The one error line a failed command ends with (a service prints its start line before)."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.strip().splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


def test_every_part_of_the_fleet_works_with_its_own_credentials(broker, namespace):
    admin = settings_for(broker, namespace, ADMIN)
    fleet = Fleet({})
    try:
        for service in ("duration", "tip", "cost"):
            fleet.env = env_for(broker, namespace, service)
            fleet.start(service)
        backend = settings_for(broker, namespace, "backend")
        assert broker.secrets.password("backend") not in repr(backend) + str(backend)
        sent = publish(backend, rides=40, seed=31)
        requests = {e["event_id"] for e in sent if e["event_type"] == "ride_requested"}
        t = admin.topics

        def answered(service: str, expected: set[str]) -> bool:
            got = {p["event_id"] for p in values(read_all(admin, t.predictions(service))) if not p.get("initial")}
            return expected <= got

        duration_events = {e["event_id"] for e in sent if e["event_type"] != "ride_completed"}
        assert wait_for(lambda: answered("tip", requests) and answered("cost", requests)
                        and answered("duration", duration_events), timeout=180), fleet.output()
        # the operator reads the groups' offsets
        shown = cli(env_for(broker, namespace, "operator"), "offsets", "show", f"{namespace}ridestream-tip")
        assert shown.returncode == 0, shown.stderr
        for proc in fleet.procs:
            assert fleet.terminate(proc) == 0
        logs = "\n".join(f.read_text(errors="replace") for f in fleet.logs.glob("*.log"))  # whole, not tails
        assert_no_secret(broker, logs, shown.stdout, shown.stderr)
    finally:
        fleet.close()


def test_the_tip_principal_cannot_write_cost_predictions_nor_join_the_cost_group(broker, namespace):
    tip = settings_for(broker, namespace, "tip")
    cost_topic = tip.topics.predictions("cost")
    reports = []
    producer = make_producer(tip, **{"message.timeout.ms": 20000})
    producer.produce(cost_topic, key=b"intruder", value=b"{}", on_delivery=lambda err, msg: reports.append(err))
    producer.flush(60)
    assert len(reports) == 1 and reports[0] is not None and reports[0].name() == "TOPIC_AUTHORIZATION_FAILED"
    admin = settings_for(broker, namespace, ADMIN)
    assert not [m for m in read_all(admin, cost_topic) if m.key() == b"intruder"]  # nothing written

    env = env_for(broker, namespace, "tip")
    joined = cli(env, "consume", "tip", "--group", f"{namespace}ridestream-cost")
    assert one_line_error(joined) == (
        f"error: user 'tip' may not join group {namespace}ridestream-cost (GROUP_AUTHORIZATION_FAILED): "
        "run the service with its own principal, or grant it (`ridestream acl apply`)")
    as_cost = cli(env, "consume", "cost")
    assert one_line_error(as_cost) == (
        f"error: user 'tip' may not use topic {cost_topic} (TOPIC_AUTHORIZATION_FAILED): "
        "run it with its own principal, or grant it (`ridestream acl apply`)")
    assert_no_secret(broker, joined.stdout, joined.stderr, as_cost.stdout, as_cost.stderr)


def test_a_wrong_password_is_one_line_and_never_shown(broker, namespace):
    wrong = "not-the-password-" + uuid.uuid4().hex
    env = env_for(broker, namespace, "tip", RIDESTREAM_SASL_PASSWORD=wrong, RIDESTREAM_CONNECT_TIMEOUT_S="5")
    for args in (["consume", "tip"], ["topics", "describe"]):
        proc = cli(env, *args)
        line = one_line_error(proc)
        assert line.startswith(f"error: the cluster at {broker.bootstrap} refused user 'tip' (SCRAM-SHA-512): "
                               "check RIDESTREAM_SASL_USERNAME and RIDESTREAM_SASL_PASSWORD"), line
        assert wrong not in proc.stdout + proc.stderr
        assert_no_secret(broker, proc.stdout, proc.stderr)


def test_acl_apply_is_idempotent_show_lists_them_and_only_the_admin_may(broker, namespace):
    admin_env = env_for(broker, namespace, ADMIN)
    again = cli(admin_env, "acl", "apply")
    assert again.returncode == 0, again.stderr
    grants = fleet_grants(settings_for(broker, namespace, ADMIN))
    assert again.stdout.strip() == f"created 0 ACLs, {len(grants)} already there"
    shown = cli({**admin_env, "COLUMNS": "250"}, "acl", "show")
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if f"{namespace}rides.predictions.cost " in line]
    assert {r.split("│")[1].strip() for r in rows} == {"cost", "backend"}  # never tip's
    refused = cli(env_for(broker, namespace, "tip"), "acl", "apply")
    assert "connect as a principal allowed to manage ACLs" in one_line_error(refused)
    assert_no_secret(broker, again.stdout, shown.stdout, refused.stderr)


def test_credentials_are_the_users_only_and_shown_on_request_only(broker, namespace):
    secrets = broker.secrets
    for path in (secrets.passwords_file, secrets.broker_pem, broker.config_file):
        assert path.stat().st_mode & 0o077 == 0, path
    assert secrets.dir.stat().st_mode & 0o077 == 0
    env = {**env_for(broker, namespace, ADMIN), "RIDESTREAM_STATE_DIR": str(broker.home.parent)}
    listed = cli(env, "broker", "credentials")
    assert listed.returncode == 0, listed.stderr
    assert "tip" in listed.stdout and str(secrets.passwords_file) in listed.stdout
    assert_no_secret(broker, listed.stdout, listed.stderr)
    asked = cli(env, "broker", "credentials", "tip")  # the explicit request
    assert f"export RIDESTREAM_SASL_PASSWORD={secrets.password('tip')}" in asked.stdout.splitlines()
