"""A page looked at in a real headless Chromium (Debian's, which `make test` installs where it
runs as root): its screenshot, under test-output/. Skips the test, with the reason, elsewhere."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TEST_OUTPUT

# what works on these machines: no sandbox as root, and nothing that calls out to Google's hosts
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot(html: str, name: str, window: str = "1400,1800") -> Path:
    """Write ``html`` to test-output/NAME.html and its screenshot to test-output/NAME.png."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    page = TEST_OUTPUT / f"{name}.html"
    page.write_text(html)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make test installs it where it can)")
    shot = TEST_OUTPUT / f"{name}.png"
    shot.unlink(missing_ok=True)
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={TEST_OUTPUT / 'chromium-profile'}",
                    f"--window-size={window}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 50_000  # a real page with charts, not a blank one
    return shot
