"""A measured process that dies says why: its stderr's tail is printed when the bench stops it."""

import os
import sys
import time

from bench.fleet import _spawn, stop_services


def test_a_process_that_died_during_the_run_has_its_stderr_printed(capsys):
    proc = _spawn([sys.executable, "-c", "import sys; print('cannot start transactions', file=sys.stderr); "
                   "sys.exit(3)"], {})
    proc.wait(30)
    stop_services([proc])
    err = capsys.readouterr().err
    assert "died during the run (exit 3)" in err and "cannot start transactions" in err


def test_a_process_stopped_cleanly_says_nothing_unless_asked(capsys):
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); " \
           "print('ready', file=sys.stderr, flush=True); time.sleep(60)"
    quiet, asked = _spawn([sys.executable, "-c", code], {}), _spawn([sys.executable, "-c", code], {})
    for proc in (quiet, asked):  # both have their handler in place
        deadline = time.monotonic() + 60
        while os.pread(proc.stderr_log.fileno(), 100, 0) == b"" and time.monotonic() < deadline:
            time.sleep(0.05)
    stop_services([quiet])
    assert capsys.readouterr().err == ""
    stop_services([asked], explain=True)
    err = capsys.readouterr().err
    assert "did not answer every event (exit 0)" in err and "ready" in err


def test_a_process_the_run_killed_itself_is_not_reported(capsys):
    proc = _spawn([sys.executable, "-c", "import time; time.sleep(60)"], {})
    proc.kill()
    proc.wait(30)
    stop_services([proc], stopped=[proc])
    assert capsys.readouterr().err == "" and proc.stderr_log.closed
