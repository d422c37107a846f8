"""docker-compose.yml is a valid Compose file (the Docker client checks it where it is installed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_follows_the_compose_spec():
    spec = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    doc = yaml.safe_load(COMPOSE.read_text())
    jsonschema.Draft7Validator(spec).validate(doc)
    assert doc["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert doc["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for service in ("duration", "tip", "cost"):
        app = doc["services"][service]
        assert app["command"][:2] == ["consume", service] and "ports" not in app  # scalable: no fixed host port
    assert doc["services"]["backend"]["command"][0] == "produce"


def _docker_compose() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(_docker_compose() is None, reason="the docker compose plugin is not installed")
def test_docker_compose_config_accepts_the_file():
    proc = subprocess.run([*_docker_compose(), "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
