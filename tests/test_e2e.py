"""The whole chain for CI, through `launch.demo` with tiny overrides: 3 synthetic subjects x 1 video of 6 s ->
pack -> pretrain (Ray Train, 2 workers x DeepSpeed ZeRO-2, 3 steps) -> LOSO fine-tuning (frozen encoder, Ray
folds) -> spot held-out subjects + a real unlabelled video -> evaluate. Not marked slow: CI runs it (~2-3 min)."""
import json
import math
from pathlib import Path

import pytest
import torch

from data.common.tables import read_predictions
from launch import demo

# The two still-image identities only: the carphone identity's small face sits near the stabiliser's 50 % face
# rule in a 6 s video with a head move (44 % in one clean-clone run, more in others while H.264 encoding of the
# same frames still varied with the machine, before issue 29), which would fail the chain for a reason this test is
# not about. The carphone identity is still spotted by tests/test_detector.py's tiny set, and `spot` here runs on the
# real carphone video.
TINY = [
    'data_overrides=["subjects=3", "videos_per_subject=1", "duration_s=6", "events.macro_per_video=[1,1]", '
    '"events.micro_per_video=[1,1]", "events.macro_duration_s=[0.6,1.5]", '
    '"identity.sources=[astronaut, grace_hopper]"]',
    'pack_overrides=["clip_frames=32", "clip_stride=16", "clips_per_shard=4", "workers=1"]',
    'pretrain_overrides=["schedule.total_steps=3", "schedule.warmup_steps=1", "checkpoint.every_steps=3", '
    '"checkpoint.log_every=1", "data.frame_strides=[1,2]"]',
    'loso_overrides=["finetune.granularities=[{name: micro, span_s: 0.5, hop_s: 0.5}, '
    '{name: macro, span_s: 2.0, hop_s: 1.5}]", "finetune.train.epochs=8", "finetune.model.head_hidden=32", '
    '"inner=holdout", "detector.steps_grid=[30,60]", "detector.detector.crop_s=6.0"]',
    "baseline_overrides=[workers=1]",
]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "demo"
    assert demo.main(["--out", str(out), *TINY]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_every_stage_leaves_its_artifacts(chain, capsys):
    out, summary = chain
    loso = Path(summary["loso"])
    for path in (out / "data/videos.csv", out / "data/intervals.csv", Path(summary["shards"]) / "manifest.json",
                 loso / "predictions.csv", loso / "baseline_predictions.csv", loso / "model", out / "results.txt",
                 out / "metrics.json", Path(summary["new_video"]["timeline"])):
        assert path.exists(), path
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert set(summary["seconds"]) == {"data", "pack", "pretrain", "finetune_loso", "spot_new_video", "plot"}
    # every held-out subject was spotted by its own fold
    assert sorted(p.name for p in (loso / "folds").iterdir()) == ["s01", "s02", "s03"]
    assert set(read_predictions(loso / "predictions.csv")["subject"].astype(str)) <= {"s01", "s02", "s03"}
    # the default full system fuses late: each fold chose the encoder detector's weight, and the table says so
    weights = summary["encoder_weights"]
    assert len(weights) == 3 and all(w in (0, 0.25, 0.5, 0.75, 1) for w in weights)
    assert "late fusion" in (out / "results.txt").read_text()


def test_pretraining_ran_with_finite_loss_and_a_checkpoint(chain):
    _, summary = chain
    record = summary["pretrain"]
    assert math.isfinite(record["metrics"]["loss"]) and record["metrics"]["loss"] > 0
    checkpoint = Path(record["checkpoint"])
    assert checkpoint.is_dir() and list(checkpoint.rglob("mp_rank_00_model_states.pt"))


def test_fine_tuned_encoder_is_the_pretrained_checkpoint(chain):
    from finetune.encoder.load import load_encoder, read_state
    from finetune.store import load_spotter

    _, summary = chain
    spotter, _ = load_spotter(summary["model"])
    pretrained, _ = read_state(summary["pretrain"]["checkpoint"])
    mine = spotter.encoder.state_dict()
    assert set(pretrained) <= set(mine)
    for name, value in pretrained.items():
        assert torch.equal(mine[name], value), name
    fresh = load_encoder(None, summary["pretrain"]["model"], seed=0).state_dict()
    moved = [n for n, v in pretrained.items() if v.is_floating_point() and not torch.equal(fresh[n], v)]
    assert len(moved) > len(pretrained) // 2  # pretraining changed the weights: not a fresh init


def test_metrics_cover_both_spotters_every_type_and_variant(chain):
    out, summary = chain
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "spotmae"}
    for result in metrics.values():
        assert set(result) == {"megc", "softnet", "strs"}
        for variant in result.values():
            for kind in ("macro", "micro", "overall"):
                assert 0.0 <= variant[kind]["f1"] <= 1.0
    assert summary["f1"]["spotmae"] == {k: metrics["spotmae"]["megc"][k]["f1"] for k in ("macro", "micro", "overall")}
    table = (out / "results.txt").read_text()
    assert "flow baseline" in table and "SpotMAE" in table


def test_rerun_skips_finished_stages(chain):
    out, summary = chain
    loso = Path(summary["loso"])
    kept = [Path(summary["pretrain"]["run"], "demo_result.json"), *loso.glob("folds/*/fold.json"),
            *Path(summary["shards"]).glob("*.tar"), loso / "spot" / "carphone_pristine.json"]
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    assert demo.main(["--out", str(out), *TINY]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps  # nothing was redone
    assert again["pretrain"]["checkpoint"] == summary["pretrain"]["checkpoint"] and again["loso"] == summary["loso"]
    assert again["f1"] == summary["f1"]
