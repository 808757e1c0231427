"""`python -m spotting spot` on the real carphone video (no labels): outputs exist and are sane."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from data.common.assets import carphone_video
from data.common.tables import read_predictions


@pytest.fixture(scope="module")
def carphone_spot(tiny_loso_run, tmp_path_factory):
    run, loso_out = tiny_loso_run
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path_factory.mktemp("spot")
    result = subprocess.run([sys.executable, "-m", "spotting", "spot", str(carphone_video()),
                             "--model", str(loso_out / "model"), "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    return result, out


def test_spot_on_carphone_writes_csv_json_png(carphone_spot):
    result, out = carphone_spot
    assert result.returncode == 0, result.stderr[-3000:]
    preds = read_predictions(out / "carphone_pristine.csv", num_frames={"carphone_pristine": 120})
    summary = json.loads((out / "carphone_pristine.json").read_text())
    assert summary["num_frames"] == 120 and summary["reader"] == "detector"
    assert summary["face_track"]["face_fraction"] >= 0.95
    assert len(summary["intervals"]) == len(preds)
    # a man talking in a car, no labelled expressions: a trained spotter should claim little
    assert len(preds) <= 8
    png = (out / "carphone_pristine_timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    curves = np.load(out / "carphone_pristine_curves.npz")
    assert curves["fused__micro"].shape == (120,) and curves["encoder__micro__brows__mean0"].shape == (120,)
    assert "frames/s" in result.stdout


def test_spot_reports_bad_input_in_one_line(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    run = subprocess.run([sys.executable, "-m", "spotting", "spot", str(fake), "--model", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]  # decord logs natively too
    assert len(errors) == 1 and "notes.mp4" in errors[0] and "Traceback" not in run.stderr
    missing_model = subprocess.run([sys.executable, "-m", "spotting", "spot", str(carphone_video()), "--model",
                                    str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                                   capture_output=True, text=True, timeout=120)
    assert missing_model.returncode == 2 and "spotter.json" in missing_model.stderr
