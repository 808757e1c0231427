"""`python -m launch demo spotmae=false` (the flow baseline alone) on a tiny synthetic set (2 subjects x 1 video
x 6 s). The full chain (pack, pretrain, LOSO) is tests/test_e2e.py."""
import json

import pytest

from data.common.errors import ConfigError
from data.common.tables import read_intervals, read_predictions
from launch import demo

TINY = ['data_overrides=["subjects=2", "videos_per_subject=1", "duration_s=6", "events.macro_per_video=[1,1]", '
        '"events.micro_per_video=[1,1]", "events.macro_duration_s=[0.6,1.5]"]',
        "baseline_overrides=[workers=1]",  # two short videos: worker start-up would cost more than it saves
        "spotmae=false"]


def test_demo_runs_end_to_end_and_reruns_from_cache(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out)] + TINY) == 0
    printed = capsys.readouterr().out
    assert "metric variant megc" in printed and "flow baseline" in printed and "timeline:" in printed
    for name in ("baseline/predictions.csv", "metrics.json", "timeline.png", "summary.json", "baseline_config.json",
                 "data/videos.csv", "data/intervals.csv"):
        assert (out / name).is_file(), name
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"

    gt = read_intervals(out / "data" / "intervals.csv")
    pred = read_predictions(out / "baseline" / "predictions.csv")
    metrics = json.loads((out / "metrics.json").read_text())["baseline"]
    assert set(metrics) == {"megc", "softnet", "strs"}
    for variant, result in metrics.items():
        for kind in ("macro", "micro", "overall"):
            r = result[kind]
            assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["f1"] <= 1.0
    for kind in ("macro", "micro"):
        r = metrics["megc"][kind]
        assert r["tp"] + r["fn"] == int((gt["type"] == kind).sum())
        assert r["tp"] + r["fp"] == int((pred["type"] == kind).sum())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["f1"] == {"baseline": {k: v["f1"] for k, v in metrics["megc"].items()}}
    assert set(summary["seconds"]) == {"data", "baseline", "plot"}

    # Rerun: the videos and the flow curves are reused, the results are the same.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "data" / "videos").iterdir()}
    assert demo.main(["--out", str(out)] + TINY) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((out / "metrics.json").read_text())["baseline"] == metrics


def test_demo_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="baseline_config"):
        demo.main(["--out", str(tmp_path), "baseline_config=configs/spotting/missing.yaml", *TINY])
    with pytest.raises(ConfigError, match="pretrain_config"):  # checked before any data is generated
        demo.main(["--out", str(tmp_path), "pretrain_config=configs/pretrain/missing.yaml"])
    assert not (tmp_path / "data").exists()
    with pytest.raises(ConfigError, match="unknown key"):
        demo.main(["--out", str(tmp_path), "spoter=baseline"])
