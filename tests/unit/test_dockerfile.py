"""The image: slim, non-root (the uid deploy/k8s runs it as), the shipped models' trees compiled
at build time, a healthcheck on /healthz. Checked statically; built and run where a Docker engine
answers (`docker info`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", text, re.MULTILINE)]


def test_slim_base_and_no_caches():
    steps = instructions()
    assert steps[0][0] == "FROM" and re.fullmatch(r"python:3\.1[1-9]-slim", steps[0][1])
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists/*" in runs and "--no-cache-dir" in runs
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".ridestream"} <= set(ignored)


def test_runs_as_the_non_root_uid_the_manifests_use():
    steps = instructions()
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) != 0
    last_user = max(i for i, (op, _) in enumerate(steps) if op == "USER")
    assert all(op != "RUN" for op, _ in steps[last_user:])  # nothing after it runs as root
    service = yaml.safe_load((ROOT / "deploy/k8s/base/service-tip.yaml").read_text().split("\n---")[0])
    assert service["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(users[-1])


def test_the_shipped_models_are_compiled_at_build_time():
    runs = [args for op, args in instructions() if op == "RUN"]
    build = next(r for r in runs if "accelerate(" in r)
    assert "MODEL_NAMES" in build and "compiled_dir" in build and "ls .ridestream/compiled/*" in build


def test_healthcheck_asks_the_service_health_endpoint():
    (check,) = [args for op, args in instructions() if op == "HEALTHCHECK"]
    assert "CMD" in check and "/healthz" in check and "RIDESTREAM_METRICS_PORT" in check


def _docker_engine() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine answers `docker info`")
def test_the_image_builds_and_a_service_starts_in_it():
    tag = f"ridestream-test:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, capture_output=True)
    try:
        run = subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--entrypoint", "sh", tag, "-c",
                              "id -u && ls /app/.ridestream/compiled | wc -l && ridestream consume tip --help"],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
        uid, compiled, *_ = run.stdout.split("\n")
        assert uid == "10001" and int(compiled) >= 1 and "duration, tip or cost" in run.stdout
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
