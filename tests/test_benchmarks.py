"""The analysis helpers of the benchmark scripts (the scripts themselves are run by hand, see README)."""
from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd


def _load(name: str):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roc_auc_matches_counting_pairs():
    probe = _load("encoder_probe")
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, size=60).astype(float)  # many ties
    label = (rng.random(60) < 0.3).astype(float)
    pos, neg = score[label > 0.5], score[label < 0.5]
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    assert np.isclose(probe.roc_auc(score, label), np.mean(pairs))
    assert probe.roc_auc(np.arange(10.0), np.arange(10) >= 5) == 1.0
    assert np.isnan(probe.roc_auc(np.arange(4.0), np.zeros(4)))
    assert np.isnan(probe.roc_auc(np.array([0.0, np.nan, 1.0]), np.array([0, 1, 1])))  # a diverged scorer


def test_ablation_table_lists_the_baseline_then_each_variant():
    ablation = _load("ablation")

    def metrics(f1):
        part = {"f1": f1, "tp": 3, "fp": 1, "fn": 2}
        return {"megc": {"macro": part, "micro": part, "overall": part}}

    copies = {"spotter": 2, "baseline": 0}
    text = ablation.table({"detector_cues": {"spotter": metrics(0.5), "baseline": metrics(0.25),
                                             "same_type_copies": copies},
                           "detector_full": {"spotter": metrics(0.75), "baseline": metrics(0.25),
                                             "same_type_copies": {**copies, "spotter": 0}}})
    lines = text.splitlines()
    assert lines[2].startswith("| flow-only baseline") and "0.250" in lines[2]
    assert "early fusion" in lines[4] and "| 0.750 | 0.750 | 0.750 | 3/1/2 |" in lines[4]
    assert lines[-1] == "Same-type copies (IoU >= 0.5) in the pooled predictions: baseline 0; detector_cues 2; " \
                        "detector_full 0."


def test_copies_are_counted_per_video_and_type():
    from spotting.intervals import count_copies

    rows = [("v1", 386, 404, "macro", 1.0), ("v1", 389, 408, "macro", 0.23), ("v1", 389, 408, "micro", 0.5),
            ("v2", 389, 408, "macro", 0.5), ("v1", 431, 470, "macro", 0.9), ("v1", 432, 464, "macro", 0.88)]
    pred = pd.DataFrame([{"video": v, "onset": a, "offset": b, "type": t, "score": s} for v, a, b, t, s in rows])
    assert count_copies(pred) == 2  # 389-408 beside 386-404 and 432-464 beside 431-470, in v1's macro rows


def test_label_efficiency_rows_pair_scratch_and_pretrained_runs(tmp_path):
    efficiency = _load("label_efficiency")

    def finished_run(folder: Path, f1: float) -> None:
        part = {"f1": f1, "tp": 3, "fp": 1, "fn": 2}
        folder.mkdir(parents=True)
        for name in ("metrics.json", "baseline_metrics.json"):
            (folder / name).write_text(json.dumps({"megc": {"macro": part, "micro": part, "overall": part}}))
        (folder / "config.json").write_text("{}")
        for name in ("predictions.csv", "baseline_predictions.csv"):  # no intervals: no same-type copies
            (folder / name).write_text("subject,video,onset,apex,offset,type,emotion,score\n")

    for k, (scratch, pretrained) in {2: (0.3, 0.45), 5: (0.5, 0.5)}.items():
        finished_run(tmp_path / f"train{k}" / "detector_encoder_scratch", scratch)
        finished_run(tmp_path / f"train{k}" / "detector_encoder_pretrained", pretrained)
    rows = efficiency.rows_for(tmp_path, [2, 5])
    assert [r["train subjects"] for r in rows] == [2, 5]
    assert rows[0]["scratch overall"] == 0.3 and rows[0]["pretrained micro"] == 0.45
    assert rows[0]["overall gain"] == 0.15 and rows[1]["overall gain"] == 0.0
    table = efficiency.markdown(rows).splitlines()
    assert table[0].startswith("| train subjects | scratch macro") and table[2].startswith("| 2 | 0.3 |")
