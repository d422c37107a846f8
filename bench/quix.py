"""Runs the Quix Streams peer (:mod:`bench.quix_app`) in a virtualenv the bench makes itself on
first use: quixstreams pins older confluent-kafka, pydantic and pydantic-settings than ridestream
does, so it cannot share the project's environment. The model's libraries (scikit-learn, numpy,
pandas, joblib, orjson, msgspec) are installed at the project's own versions, so the same artifact
loads and `shared` imports."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from importlib.metadata import version
from pathlib import Path

from bench.loops import Measure
from shared.contract.topics import TopicSpec, create_topics
from shared.kafka.clients import make_admin
from shared.kafka.settings import Settings

QUIXSTREAMS = "quixstreams==3.28.1"
SHARED_PINS = ("scikit-learn", "scipy", "numpy", "pandas", "joblib", "orjson", "msgspec")
APP = Path(__file__).resolve().parent / "quix_app.py"


class QuixUnavailable(RuntimeError):
    """The Quix Streams virtualenv could not be made (no package index reachable, …)."""


def ensure_venv(settings: Settings) -> Path:
    """The peer's interpreter, making the virtualenv (once; about a minute) when missing."""
    pins = [QUIXSTREAMS, *(f"{p}=={version(p)}" for p in SHARED_PINS)]
    venv = settings.state_dir / "bench-quix-venv"
    python, marker = venv / "bin" / "python", venv / ".installed"
    if marker.is_file() and marker.read_text() == "\n".join(pins):
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise QuixUnavailable(f"could not make the Quix Streams virtualenv in {venv}: "
                              f"{(exc.stderr or '').strip().splitlines()[-1:] or exc}") from None
    marker.write_text("\n".join(pins))
    return python


def quix(settings: Settings, python: Path, source: str, partitions: int, n: int, max_seconds: float) -> Measure:
    """One run of the Quix application over the pre-produced events, with its own group and sink."""
    sink = f"{source}.quix-{uuid.uuid4().hex[:6]}"
    create_topics(make_admin(settings), [TopicSpec(sink, partitions)])
    group = f"{settings.namespace}bench-quix-{uuid.uuid4().hex[:6]}"
    done = subprocess.run([str(python), str(APP), settings.bootstrap, source, sink, group, str(n), str(max_seconds)],
                          check=True, capture_output=True, text=True, timeout=max_seconds + 180)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Measure(int(out["events"]), float(out["seconds"]))
