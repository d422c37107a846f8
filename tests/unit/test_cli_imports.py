"""The command line loads what a command needs when it runs: importing it, or asking for --help,
imports none of the heavy libraries (each command imports its own inside its function). Checked
by the modules a fresh interpreter holds, never by a time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sklearn", "scipy", "pandas", "pyarrow", "matplotlib", "sqlalchemy", "treelite", "tl2cgen", "fastapi")

_LOADED = """
import json, sys
{body}
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


def _top_modules(body: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _LOADED.format(body=body)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_importing_the_command_line_loads_no_heavy_library():
    loaded = _top_modules("import ridestream.cli")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("argv", [["--help"], ["consume", "--help"], ["bench", "--help"], ["deploy", "--help"]])
def test_help_loads_no_heavy_library(argv):
    body = ("import contextlib, io\nsys.argv = ['ridestream', *{argv!r}]\nfrom ridestream.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main()\n    except SystemExit:\n        pass").format(argv=argv)
    loaded = _top_modules(body)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_produce_help_names_the_simulators_drifts():
    from ridestream.produce_cmd import DRIFT_NAMES
    from shared.data.simulator import DRIFTS

    assert DRIFT_NAMES == tuple(DRIFTS)
