"""`ridestream drift` on a range of the real broker's rides.events: ordinary traffic, then the same
backend with the drift knob turned; the shifted features come first, in the terminal and in the
HTML page, whose drift and quality sections are looked at in headless Chromium."""

from __future__ import annotations

import subprocess

import numpy as np

from consumers.drift_report import SHIFTED, build
from consumers.offsets import parse_position
from consumers.replay import plan
from shared.ml.artifacts import MODEL_NAMES, load_model
from tests.browser import screenshot
from tests.integration.fleet import RIDESTREAM, fleet_env, publish


def test_drift_report_puts_the_shifted_features_first_and_renders_in_chromium(kafka, tmp_path):
    kafka.create_contract_topics()
    env = fleet_env(kafka.env())
    publish(kafka.settings, rides=300, seed=21)
    calm = {name: load_model(name) for name in MODEL_NAMES}
    before = build(kafka.settings, calm, plan(kafka.settings, parse_position("earliest"), parse_position("latest")))
    tip = next(m for m in before.models if m.model == "tip")
    assert tip.rows >= 290 and max(f.psi for f in tip.features if f.feature not in ("hour", "weekday")) < SHIFTED
    assert tip.mae is not None and tip.rides >= 290  # judged on the completed rides of the range

    proc = subprocess.run([*RIDESTREAM, "produce", "--drift", "long-trips", "--rides", "300", "--rate", "0", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "drift.html"
    proc = subprocess.run([*RIDESTREAM, "drift", "--from", "earliest", "--to", "latest", "--html", str(page)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    tip_table = proc.stdout[proc.stdout.index("tip v"):]
    first_row = next(line for line in tip_table.splitlines()[1:] if line.strip() and "PSI" not in line and "─" not in line)
    assert first_row.split()[0] == "distance_mi" and "shifted" in first_row, proc.stdout
    html = page.read_text()
    assert "id='drift'" in html and "id='quality'" in html and "distance_mi" in html
    for external in ("<script", "<link", 'src="http', "url(http", "<img"):
        assert external not in html  # self-contained

    bad = subprocess.run([*RIDESTREAM, "drift", "--model", "tip=vnope"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "no tip model version 'vnope'" in bad.stderr and "Traceback" not in bad.stderr

    shot = screenshot(html, "drift", window="1400,2400")  # tables and charts, not a blank page
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 200  # the shifted features' red bars are drawn
