"""`ridestream run` stopping its children: one that overruns its drain has its threads' stacks
written to its log (SIGUSR1, installed by every ridestream command) before it is killed, and the
line naming it says so — the only trace a CI run or a stuck host leaves of why it did not stop."""

from __future__ import annotations

import subprocess
import sys
import time

from ridestream.run_cmd import Child, _stop_children

STUBBORN = """
import signal, time
from ridestream import startup_signals
startup_signals.install()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a drain that never ends
print("ready", flush=True)
def waiting_for_the_coordinator():
    time.sleep(60)
waiting_for_the_coordinator()
"""


def start(tmp_path, code: str) -> Child:
    child = Child("tip-1", [], tmp_path / "tip-1.log")
    with open(child.log, "ab") as log:
        child.proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while "ready" not in child.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return child


def test_a_child_that_overruns_its_drain_leaves_its_stacks_and_is_named(tmp_path):
    child = start(tmp_path, STUBBORN)
    _stop_children([child], timeout=1)
    assert child.proc.returncode == -9
    log = child.log.read_text()
    assert "most recent call first" in log and "waiting_for_the_coordinator" in log
    assert child.why == f"did not stop within 1 s and was killed; its threads' stacks end {child.log}"


def test_a_child_that_drains_in_time_is_not_reported(tmp_path):
    child = start(tmp_path, "import time; print('ready', flush=True); time.sleep(60)")
    _stop_children([child], timeout=10)
    assert child.proc.returncode == -15 and child.overran is None
    assert child.why == f"exited -15, see {child.log}"
