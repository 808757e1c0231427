"""spotting.evaluation.protocol: LOSO folds through a fold runner, skip-if-done, pooling, every metric variant,
results tables."""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from data.common.errors import ConfigError
from data.common.tables import empty_intervals
from spotting.evaluation import protocol
from spotting.evaluation.metric import VARIANTS, evaluate
from spotting.intervals import Interval, to_frame

VIDEOS = pd.DataFrame({"subject": ["s1", "s1", "s2", "s3"], "video": ["a", "b", "c", "d"],
                       "path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], "fps": [30.0] * 4, "num_frames": [300] * 4})
GT = pd.DataFrame({"subject": ["s1", "s2", "s3", "s3"], "video": ["a", "c", "d", "d"], "onset": [10, 10, 10, 200],
                   "apex": [15, 15, 15, 202], "offset": [40, 40, 40, 204], "type": ["macro", "macro", "macro", "micro"],
                   "emotion": [""] * 4})


@dataclasses.dataclass
class FirstSecond:
    """A spotter that learns nothing: one macro interval over the first second of every test video."""
    calls: list = dataclasses.field(default_factory=list)

    def __call__(self, split: protocol.Split) -> protocol.FoldResult:
        self.calls.append(split)
        frames = [empty_intervals(with_score=True)]
        frames += [to_frame([Interval(0, 15, 29, "macro", 1.0)], split.test, v)
                   for v in protocol.videos_of(VIDEOS, [split.test])]
        return protocol.FoldResult(pd.concat(frames, ignore_index=True), {"kind": "first second"},
                                   {"extra.json": {"held_out": split.test}})


def test_folds_are_run_once_pooled_and_scored_in_every_variant(tmp_path):
    runner = FirstSecond()
    subjects = protocol.subjects_of(VIDEOS, "videos.csv")
    result = protocol.evaluate_folds(runner, subjects, GT, tmp_path)
    assert [(s.test, s.train) for s in runner.calls] == [("s1", ("s2", "s3")), ("s2", ("s1", "s3")),
                                                         ("s3", ("s1", "s2"))]
    assert sorted(result.predictions["video"]) == ["a", "b", "c", "d"]
    assert result.metrics == {v: evaluate(GT, result.predictions, v) for v in VARIANTS}
    assert json.loads((tmp_path / "metrics.json").read_text()) == result.metrics
    info = json.loads((tmp_path / "folds" / "s3" / "fold.json").read_text())
    assert info["test_subject"] == "s3" and info["train_subjects"] == ["s1", "s2"] and info["kind"] == "first second"
    # the fold is scored by the protocol on the held-out subject only: [0, 29] vs [10, 40] is IoU 20/41 < 0.5
    assert info["metrics"]["macro"] == {"tp": 0, "fp": 1, "fn": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert info["metrics"]["micro"]["fn"] == 1
    assert json.loads((tmp_path / "folds" / "s2" / "extra.json").read_text()) == {"held_out": "s2"}
    assert result.seconds == pytest.approx(sum(json.loads((tmp_path / "folds" / s / "fold.json").read_text())
                                               ["seconds"] for s in subjects))
    (tmp_path / "folds" / "s2" / "fold.json").unlink()  # an unfinished fold: only it is run again
    again = FirstSecond()
    assert protocol.evaluate_folds(again, subjects, GT, tmp_path).metrics == result.metrics
    assert [s.test for s in again.calls] == ["s2"]


def test_one_subject_is_not_a_loso_dataset():
    with pytest.raises(ConfigError, match="videos.csv: subject: LOSO needs at least 2 subjects"):
        protocol.subjects_of(VIDEOS[VIDEOS["subject"] == "s1"], "videos.csv")


def _metrics(f1: float, tp: int, fp: int, fn: int) -> dict:
    part = {"f1": f1, "tp": tp, "fp": fp, "fn": fn}
    return {"megc": {"macro": part, "micro": part, "overall": part}, "softnet": {"overall": part}}


def test_results_tables_in_markdown_and_text():
    rows = [protocol.Row("baseline", _metrics(0.5, 15, 11, 20), 59.4),
            protocol.Row("broken", {"error": "ValueError: no"}, 3.0)]
    assert protocol.results_table(rows, ["macro", "overall_softnet", "strs", "seconds"]).splitlines() == [
        "| method | macro F1 | overall F1 (softnet) | STRS | time (s) |", "|---|---|---|---|---|",
        "| baseline | 0.500 | 0.500 | - | 59 |", "| broken | failed: ValueError: no | | | 3 |"]
    text = protocol.results_table(rows[:1], ["macro", "micro", "overall", "counts"], label="spotter", style="text",
                                  label_width=12)
    head = "spotter      macro F1 micro F1 overall F1   overall TP/FP/FN"
    assert text.splitlines() == [head, "-" * len(head), "baseline        0.500    0.500      0.500   15/11/20"]


def test_label_efficiency_splits_use_each_subject_equally():
    subjects = ["s1", "s2", "s3", "s4", "s5", "s6"]
    splits = protocol.loso_splits(subjects, train_subjects=2)
    assert [(s.test, s.train) for s in splits[:2]] == [("s1", ("s2", "s3")), ("s2", ("s3", "s4"))]
    assert splits[-1].train == ("s1", "s2")  # cyclic: s6 trains on the first two
    used = [t for s in splits for t in s.train]
    assert all(used.count(s) == 2 for s in subjects) and all(s.test not in s.train for s in splits)
    assert protocol.loso_splits(subjects, 5) == protocol.loso_splits(subjects)
