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


def test_a_service_stopped_while_it_imports_exits_0():
    # 0.8 s is inside the 2–4 s of imports; the broker address is never reached
    proc = subprocess.Popen([sys.executable, "-m", "ridestream.cli", "consume", "tip"],
                            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "localhost:1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by SIGTERM while starting" in stderr
