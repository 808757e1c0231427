"""Checkpoints describe themselves: a pretraining run whose model was changed on the command line (lgi_tiny with
depth 3) fine-tunes (`python -m finetune`), releases (`python -m launch release`) and spots (`python -m spotting
spot`) without anyone naming the architecture again. Two pretraining steps on 2 Ray workers, tiny data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_pretrain import local_ray, shards, tiny_config  # noqa: F401 (fixtures)

from data.common.cli import run_main
from data.common.errors import ConfigError
from finetune import store
from finetune.cli import main as finetune_main
from finetune.encoder.load import load_encoder
from launch import release
from pretrain.config import read_run_config
from pretrain.model_config import named_config
from pretrain.train_loop import check_same_model
from spotting.cli.spot import main as spot_main

DEPTH = 3  # lgi_tiny has 2 blocks


@pytest.fixture(scope="module")
def deeper_run(local_ray, shards, tmp_path_factory):  # noqa: F811 (fixtures)
    from pretrain.trainer import fit

    cfg = tiny_config(shards, tmp_path_factory.mktemp("runs"), "deeper", f"model.depth={DEPTH}",
                      "schedule.total_steps=2", "schedule.warmup_steps=1")
    result = fit(cfg)
    return cfg, Path(cfg.checkpoint.storage_path) / "deeper", Path(result.checkpoint.path)


def test_the_checkpoint_carries_the_changed_model(deeper_run):
    cfg, _, checkpoint = deeper_run
    saved = read_run_config(checkpoint)
    assert saved.model == named_config("lgi_tiny", depth=DEPTH) == cfg.model
    with pytest.raises(ConfigError, match=r"depth: checkpoint 3, config 2"):  # resuming with another model
        check_same_model(tiny_config(cfg.data.shards, cfg.checkpoint.storage_path, "deeper"), saved, checkpoint)


def test_finetune_release_and_spot_follow_the_checkpoint(deeper_run, tiny_spotting_set, tiny_finetune_overrides,
                                                         tmp_path, capsys):
    _, run_dir, _ = deeper_run
    finetune = ["--config", "configs/finetune/synthetic.yaml", f"data.root={tiny_spotting_set}",
                f"model.encoder={run_dir}", *tiny_finetune_overrides, "train.epochs=2"]
    assert run_main(finetune_main, [*finetune, f"out={tmp_path / 'ft'}"]) == 0
    spotter, _ = store.load_spotter(tmp_path / "ft" / "model")
    assert spotter.encoder.cfg.depth == DEPTH and len(spotter.encoder.blocks) == DEPTH
    pretrained = load_encoder(run_dir)
    for name, value in pretrained.state_dict().items():
        assert torch.equal(spotter.encoder.state_dict()[name], value), name

    # a name that contradicts the checkpoint is an error that names both
    capsys.readouterr()
    assert run_main(finetune_main, [*finetune, f"out={tmp_path / 'other'}", "model.name=lgi_base"]) == 2
    err = capsys.readouterr().err
    assert "'lgi_base'" in err and "'lgi_tiny'" in err and str(run_dir) in err

    out = tmp_path / "release"
    assert release.main(["--checkpoint", str(run_dir), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["depth"] == DEPTH and config["name"] == "lgi_tiny"
    video = torch.randn(1, 3, 16, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(release.load_release(out)(video.transpose(1, 2)).last_hidden_state,
                           pretrained.forward_all(video).flatten(1, 3))
    assert "global batch 4" in (out / "README.md").read_text()  # the card's recipe: the run's own config

    clip = Path(tiny_spotting_set) / "videos" / "s01_v01.mp4"
    spotted = tmp_path / "spot"
    assert run_main(spot_main, [str(clip), "--model", str(tmp_path / "ft" / "model"), "--aligned",
                                "--out", str(spotted)]) == 0
    summary = json.loads((spotted / "s01_v01.json").read_text())
    assert summary["num_frames"] == 240 and isinstance(summary["intervals"], list)
