"""A stop asked for while the command line is still importing ends the process cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ridestream import startup_signals


def test_a_signal_during_start_up_is_remembered_then_ends_the_process_cleanly():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        startup_signals.install()
        os.kill(os.getpid(), signal.SIGTERM)  # would end this test process without the handler
        time.sleep(0.01)
        assert startup_signals._received == [signal.SIGTERM]
        with pytest.raises(SystemExit) as stop:
            startup_signals.settle()
        assert stop.value.code == 0
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
    finally:
        startup_signals._received.clear()
        for sig, handler in before.items():
            signal.signal(sig, handler)


# the stop arrives exactly while `consume` imports the runtime (not after a sleep: a warm service's
# imports take well under a second now, and a timed signal would land after them)
_STOP_DURING_IMPORTS = """
import importlib.abc, os, signal, sys

class StopWhenTheRuntimeImports(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "consumers.runtime":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, StopWhenTheRuntimeImports())
sys.argv = ["ridestream", "consume", "tip"]
from ridestream.cli import main
main()
"""


def test_a_service_stopped_while_it_imports_exits_0():
    proc = subprocess.run([sys.executable, "-c", _STOP_DURING_IMPORTS], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "localhost:1"})  # never reached
    assert proc.returncode == 0, proc.stderr
    assert "stopped by SIGTERM while starting" in proc.stderr
