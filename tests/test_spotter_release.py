"""`python -m launch release --spotter`: a trained spotter (the tiny LOSO run's final model) as a Hub repo: its
files unchanged with their sha256, a card from the run (data, LOSO table, channels, limits), and `python -m
spotting spot --model org/name` reading it offline from a local Hub cache laid out as huggingface_hub lays it out."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_error, run_cli
from hub_cache import add_to_cache

from data.common.assets import carphone_video
from data.common.checksums import file_record
from data.common.video_io import read_frames, write_mp4
from launch.release_folder import is_complete
from spotting import spotter as spotters

REPO_ID = "spotmae/spotter-synthetic"


@pytest.fixture(scope="module")
def loso_out(tiny_loso_run) -> Path:
    run, out = tiny_loso_run
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def released(loso_out, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spotter_release") / "release"
    proc = run_cli("launch", "release", "--spotter", loso_out / "model", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 60 frames of the carphone video."""
    return write_mp4(tmp_path_factory.mktemp("clip") / "carphone60.mp4", read_frames(carphone_video(), range(60)),
                     29.97)


def test_the_release_holds_the_spotters_files_and_their_sha256(released, loso_out):
    model = loso_out / "model"
    recorded = json.loads((model / "spotter.json").read_text())["files"]
    manifest = json.loads((released / "release.json").read_text())
    assert manifest["kind"] == "spotter-folder" and manifest["reader"] == "detector"
    assert set(manifest["files"]) == {*recorded, "spotter.json", "README.md"}
    for name in [*recorded, "spotter.json"]:
        assert (released / name).read_bytes() == (model / name).read_bytes(), name
    for name, record in manifest["files"].items():
        assert record == file_record(released / name), name
    assert is_complete(released) and spotters.load(released).reader_name == "detector"
    (released / "README.md").write_text((released / "README.md").read_text() + " ")
    assert not is_complete(released)  # a rerun would export again
    (released / "README.md").write_text((released / "README.md").read_text()[:-1])


def card_row(system: str, kind: str, row: dict) -> str:
    return (f"| {system} | {kind} | {row['tp']} | {row['fp']} | {row['fn']} | {row['precision']:.4f} | "
            f"{row['recall']:.4f} | {row['f1']:.4f} |")


def test_the_card_states_data_loso_table_channels_and_limits(released, loso_out):
    card = (released / "README.md").read_text()
    spotter, baseline = (json.loads((loso_out / name).read_text())["megc"] for name in
                         ("metrics.json", "baseline_metrics.json"))
    for kind in ("macro", "micro", "overall"):
        assert card_row("this spotter", kind, spotter[kind]) in card
        assert card_row("flow-only baseline, same videos", kind, baseline[kind]) in card
    assert "Metric variant `megc` (MEGC: one-to-one matching per video" in card
    assert "videos 3, subjects 3" in card and "at 30 fps" in card and "learned from every subject: s01, s02, s03" in card
    assert "Synthetic: SpotMAE's generator" in card and "Synthetic training data does not transfer to real faces" in card
    assert "the `detector` reader on the channel sets `cues`, `flow`, `encoder`" in card
    assert "- `encoder`: pooled features of the lgi_tiny encoder" in card and "lighting `plane`" in card
    assert f"--model {REPO_ID}" not in card and "--model ORG/NAME" in card  # no repo id given


def test_another_metric_variant_and_a_bad_results_file(loso_out, tmp_path):
    out = tmp_path / "strs"
    proc = run_cli("launch", "release", "--spotter", loso_out / "model", "--out", out, "--variant", "strs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = (out / "README.md").read_text()
    strs = json.loads((loso_out / "metrics.json").read_text())["strs"]
    assert "Metric variant `strs`" in card and card_row("this spotter", "overall", strs["overall"]) in card
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"megc": {"macro": {}}}))
    proc = run_cli("launch", "release", "--spotter", loso_out / "model", "--out", tmp_path / "bad", "--results", bad)
    one_error(proc, str(bad), "--results", "megc")
    assert not (tmp_path / "bad").exists()


def test_spot_reads_the_release_by_hub_id_from_the_local_hub_cache_offline(released, loso_out, clip, tmp_path):
    cache = tmp_path / "hub"
    snapshot = add_to_cache(cache, REPO_ID, released)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    by_id = run_cli("spotting", "spot", clip, "--model", REPO_ID, "--out", tmp_path / "by_id", env=env)
    assert by_id.returncode == 0, by_id.stderr[-3000:]
    by_folder = run_cli("spotting", "spot", clip, "--model", loso_out / "model", "--out", tmp_path / "by_folder")
    assert by_folder.returncode == 0, by_folder.stderr[-3000:]
    stem = clip.stem
    assert (tmp_path / "by_id" / f"{stem}.csv").read_text() == (tmp_path / "by_folder" / f"{stem}.csv").read_text()
    first, second = (np.load(tmp_path / run / f"{stem}_curves.npz") for run in ("by_id", "by_folder"))
    assert sorted(first.files) == sorted(second.files) and any(k.startswith("encoder__") for k in first.files)
    for key in first.files:
        assert np.array_equal(first[key], second[key]), key
    summary = json.loads((tmp_path / "by_id" / f"{stem}.json").read_text())
    assert summary["model"] == REPO_ID and summary["model_folder"] == str(snapshot)
    missing = run_cli("spotting", "spot", clip, "--model", "spotmae/not-downloaded", "--out", tmp_path / "o", env=env)
    one_error(missing, "spotmae/not-downloaded", "not found", str(cache), "hf download spotmae/not-downloaded")
    assert not (tmp_path / "o").exists()


def test_the_spotters_encoder_channels_are_the_apis_encoder_features(loso_out, clip):
    from spotting.api import Spotter, encoder_features

    spotter = Spotter.from_pretrained(loso_out / "model")
    features = encoder_features(spotter.encoder, clip, config=spotter.encoder_channels)
    channels = {c.name: v for c, v in spotter.builder().channels(spotter.builder().source(clip, clip.stem)).items()
                if c.set == "encoder"}
    assert list(features.columns) == sorted(channels) and len(features) == 60
    for name, curve in channels.items():
        np.testing.assert_array_equal(features[name].to_numpy(), curve)
