"""Encoder fine-tuning on the motion view (finetune.encoder.tuning): what learns, early stopping, the inputs it is
taught with. The fold-level run inside LOSO and `spot` on its final model are in tests/test_detector.py."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from data.common.config import load_config
from data.common.errors import ConfigError
from data.faces.motion_view import MotionViewConfig, ViewStream
from finetune.encoder import tuning as mt
from finetune.encoder.layer_decay import encoder_param_groups
from finetune.encoder.load import encoder_digest
from finetune.windows import Granularity
from pretrain.lgi_former import LGIEncoder
from pretrain.model_config import named_config

GRANS = [Granularity("micro", 0.5, 0.5)]
ICFG = MotionViewConfig()
FAST = mt.EncoderTuningConfig(mode="partial", epochs=3, patience=3, windows_per_epoch=8, val_windows=8, probe_epochs=3,
                              batch_size=4, lr=1e-3)


def toy_video(seed: int, steps: int = 48) -> mt.TuningVideo:
    """A noisy grey face whose mouth brightens during steps 16-31 (labelled macro), at the 30 Hz grid."""
    rng = np.random.default_rng(seed)
    x = (128 + rng.normal(0, 2, (steps, 160, 160))).astype(np.float32)
    labels = np.zeros((steps, 2), np.float32)
    x[16:32, 110:130, 60:100] += 30.0
    labels[16:32, 0] = 1.0
    return mt.TuningVideo(f"v{seed}", ViewStream(x, np.median(x, 0), None, 30.0), labels)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return LGIEncoder(named_config("lgi_tiny")).eval()


def test_partial_tuning_learns_only_the_last_block_and_returns_the_best_epoch(encoder, one_torch_thread):
    original = copy.deepcopy(encoder.state_dict())
    tuned, info = mt.tune_encoder(encoder, [toy_video(0), toy_video(1)], [toy_video(2)], ICFG, GRANS, FAST)
    last = len(encoder.blocks) - 1
    after = tuned.state_dict()
    for name, tensor in original.items():
        if not name.startswith((f"blocks.{last}.", "norm.")):
            assert torch.equal(tensor, after[name]), f"{name} is frozen in partial mode"
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in original.items()), "the input encoder is kept"
    history = info["history"]
    digests = [h["digest"] for h in history]
    assert len(history) == FAST.epochs + 1 and len(set(digests)) == len(digests), "every epoch moves the encoder"
    assert digests[0] == encoder_digest(encoder), "epoch 0 trains the head alone"
    aucs = [h["val_auc"] for h in history]
    assert info["best_epoch"] == aucs.index(max(aucs)) and info["best_val_auc"] == max(aucs)
    assert encoder_digest(tuned) == digests[info["best_epoch"]], "the best epoch's weights are returned"
    assert not tuned.training and not any(p.requires_grad for p in tuned.parameters())


def test_tuning_stops_after_patience_epochs_without_a_better_validation_auc(encoder, one_torch_thread):
    cfg = dataclasses.replace(FAST, epochs=6, patience=1)
    _, info = mt.tune_encoder(encoder, [toy_video(0)], [toy_video(2)], ICFG, GRANS, cfg)
    epochs = [h["epoch"] for h in info["history"]]
    assert epochs[-1] == min(cfg.epochs, info["best_epoch"] + cfg.patience)


def test_nothing_to_judge_keeps_the_encoder_as_given_and_a_damaged_tuning_cache_is_tuned_again(encoder, tmp_path,
                                                                                            one_torch_thread):
    from data.common.atomic import write_json
    from finetune.encoder.load import save_encoder
    from spotting.channels.tuned import cached_tuning

    quiet = toy_video(2)
    quiet.labels[:] = 0  # no event in the validation video: no AUC
    tuned, info = mt.tune_encoder(encoder, [toy_video(0)], [quiet], ICFG, GRANS, FAST)
    assert info["best_val_auc"] is None and len(info["history"]) == 1
    assert encoder_digest(tuned) == encoder_digest(encoder)
    folder = tmp_path / "tuned"
    save_encoder(tuned, folder / "encoder")
    write_json(folder / "record.json", info)
    assert encoder_digest(cached_tuning(folder)[0]) == encoder_digest(encoder)
    write_json(folder / "record.json", {**info, "history": [{**info["history"][0], "digest": "0" * 16}]})
    assert cached_tuning(folder) is None, "weights that are not the recorded ones"
    (folder / "record.json").write_text("{")
    assert cached_tuning(folder) is None, "a cut-off record"


def test_full_mode_trains_the_embedding_and_partial_only_the_last_layers(encoder):
    def learned(mode):
        enc = copy.deepcopy(encoder)
        groups = encoder_param_groups(enc, dataclasses.replace(FAST, mode=mode))
        ids = {id(p) for g in groups for p in g["params"]}
        return {n for n, p in enc.named_parameters() if id(p) in ids}

    last = len(encoder.blocks) - 1
    partial, full = learned("partial"), learned("full")
    assert partial and all(n.startswith((f"blocks.{last}.", "norm.")) for n in partial)
    assert full == {n for n, _ in encoder.named_parameters()}
    with pytest.raises(ConfigError, match="trainable_blocks"):
        mt.check_tuning(dataclasses.replace(FAST, trainable_blocks=len(encoder.blocks) + 1), encoder)
    mt.check_tuning(dataclasses.replace(FAST, mode="full", trainable_blocks=len(encoder.blocks) + 1), encoder)


def test_grid_labels_average_the_frames_of_a_step_and_a_slower_video_takes_the_source_frame():
    from spotting.channels.encoder import frame_steps

    labels = np.zeros((200, 4), np.float32)
    labels[100:150, 1] = 1.0  # 0.25 s of micro at 200 fps
    steps = frame_steps(200, 200.0, 30.0, 30)
    grid = mt.grid_labels(labels, steps, np.searchsorted(steps, np.arange(30)))
    frames_per_step = np.bincount(steps, minlength=30)
    assert grid.shape == (30, 2) and np.isclose((grid[:, 1] * frames_per_step).sum(), 50, atol=1e-4)
    assert grid[15, 1] == 1.0 and 0 < grid[22, 1] < 1  # the event ends inside step 22 (frame 150 = 22.5 steps)
    slow = np.zeros((15, 4), np.float32)
    slow[5, 0] = 1.0  # 15 fps: every second grid step holds no frame
    steps = frame_steps(15, 15.0, 30.0, 30)
    sources = np.minimum(np.arange(30) // 2, 14)
    grid = mt.grid_labels(slow, steps, sources)
    assert list(np.flatnonzero(grid[:, 0])) == [10, 11]


def test_each_epoch_draws_the_event_share_and_augmentation_is_seeded():
    samples = mt.window_samples([toy_video(0, steps=96)], [Granularity("micro", 0.5, 0.1)], 16, 2)
    has_event = np.array([s.target.max() > 0.5 for s in samples])
    assert 0 < has_event.sum() < len(samples) / 2
    picked = mt.epoch_samples(samples, FAST, np.random.default_rng(0))
    assert len(picked) == FAST.windows_per_epoch
    assert sum(s.target.max() > 0.5 for s in picked) == round(FAST.windows_per_epoch * FAST.event_fraction)
    clip = np.random.default_rng(1).normal(0, 1, (3, 16, 160, 160)).astype(np.float32)
    aug = mt.AugmentConfig()
    one, two = (mt.augment(clip, aug, np.random.default_rng(5)) for _ in range(2))
    assert one.shape == clip.shape and np.array_equal(one, two) and not np.array_equal(one, clip)
    off = mt.AugmentConfig(flip=False, gain_jitter=0, shift_px=0, pixel_noise=0)
    assert np.array_equal(mt.augment(clip, off, np.random.default_rng(5)), clip)


@pytest.mark.parametrize("overrides, match", [
    (["encoder_tuning.mode=partial", "channels=[cues,flow]", "detector.groups=[]"], "not read"),
    (["encoder_tuning.mode=partial", "channels=[cues,flow,encoder,heads]"], "RGB features"),
    (["encoder_tuning.mode=sometimes"], "mode"),
    (["encoder_tuning.mode=partial", "encoder_channels.pool=2bands"], "pooled as"),
    (["encoder_tuning.mode=partial", "encoder_channels.view.layer=embed"], "layer"),
])
def test_tuning_settings_that_cannot_work_are_refused_by_name(overrides, match):
    from spotting.evaluation.loso import LosoConfig

    with pytest.raises(ConfigError, match=match) as err:
        load_config("configs/spotting/loso.yaml", LosoConfig, overrides)
    assert "encoder_tuning.mode" in str(err.value) or "encoder_channels" in str(err.value)
