"""Fine-tuning: windows and resampling, labels, time-ordered heads, encoder loading, training, the CLI."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from data.common.config import load_config
from data.common.errors import ConfigError, DataError
from finetune.encoder.load import encoder_features, load_encoder, save_encoder
from finetune.heads.config import FinetuneConfig
from finetune.heads.model import SpottingHead
from finetune.heads.train import auto_pos_weight, build_heads, param_groups, spotting_loss, train_head
from finetune.windows import CHANNELS, CurveAccumulator, frame_labels, sample_step, video_windows, window_labels


@pytest.fixture(scope="module")
def tiny_encoder():
    torch.set_num_threads(1)
    return load_encoder(None, "lgi_tiny", seed=0).eval()


@pytest.mark.parametrize("fps,step", [(30.0, 1.0), (200.0, 6.25)])
def test_windows_span_the_same_seconds_at_30_and_200_fps(fps, step):
    windows = video_windows("v", int(20 * fps), fps, span_s=0.5, hop_s=0.25, frames=16)
    assert sample_step(fps, 0.5, 16) == pytest.approx(step)
    first = windows[0]
    span_s = (first.bounds[-1] - first.bounds[0]) / fps
    assert span_s == pytest.approx(max(0.5, 16 / fps), abs=1 / fps)  # 30 fps cannot go below 16 frames
    assert np.all(np.diff(first.indices) == np.diff(np.round(np.arange(16) * step)))
    starts = [w.bounds[0] for w in windows]
    assert np.diff(starts[:-1]).tolist() == [round(0.25 * fps)] * (len(starts) - 2)


def test_macro_windows_resample_to_the_same_duration():
    at30 = video_windows("v", 600, 30.0, 3.0, 1.0, 16)[0]
    at200 = video_windows("v", 4000, 200.0, 3.0, 1.0, 16)[0]
    assert (at30.bounds[-1] - at30.bounds[0]) / 30 == pytest.approx(3.0, abs=0.05)
    assert (at200.bounds[-1] - at200.bounds[0]) / 200 == pytest.approx(3.0, abs=0.01)


def test_windows_cover_every_frame_once_per_overlap_and_reach_the_end():
    windows = video_windows("v", 101, 30.0, 0.5, 0.25, 16)
    acc = CurveAccumulator(101, 1)
    for w in windows:
        acc.add(w, np.ones((16, 1)))
    assert acc.count.min() >= 1
    assert windows[-1].bounds[-1] == 101 and windows[-1].indices[-1] == 100
    short = video_windows("v", 5, 30.0, 0.5, 0.25, 16)  # shorter than one window: last frame repeated
    assert len(short) == 1 and short[0].indices.tolist() == [0, 1, 2, 3, 4] + [4] * 11


def test_accumulator_averages_overlapping_windows_on_the_frame_axis():
    windows = video_windows("v", 48, 30.0, 0.5, 0.25, 16)  # starts 0, 8, 16, 24, 32
    acc = CurveAccumulator(48, 1)
    for i, w in enumerate(windows):
        acc.add(w, np.full((16, 1), float(i)))
    curve = acc.curve()[:, 0]
    assert curve[0] == 0.0 and curve[8] == pytest.approx(0.5) and curve[47] == pytest.approx(4.0)


def test_frame_labels_presence_inclusive_and_apex_peak():
    gt = pd.DataFrame([{"onset": 10, "apex": 14, "offset": 20, "type": "micro"},
                       {"onset": 40, "apex": 60, "offset": 80, "type": "macro"}])
    labels = frame_labels(gt, 100)
    micro, macro = CHANNELS.index("micro_present"), CHANNELS.index("macro_present")
    assert np.flatnonzero(labels[:, micro]).tolist() == list(range(10, 21))
    assert np.flatnonzero(labels[:, macro]).tolist() == list(range(40, 81))
    assert int(np.argmax(labels[:, CHANNELS.index("micro_apex")])) == 14
    assert int(np.argmax(labels[:, CHANNELS.index("macro_apex")])) == 60
    # a 200 fps-style window (step 6.25) keeps a short event as a fractional target
    window = video_windows("v", 100, 200.0, 0.5, 0.25, 16)[0]
    targets = window_labels(labels, window)
    covered = (targets[:, micro] * np.diff(window.bounds)).sum()
    assert 0 < targets[:, micro].max() <= 1 and covered == pytest.approx(11)  # every event frame counted once


@pytest.mark.parametrize("kernel,frames", [(1, [10, 11]), (3, list(range(8, 14)))])
def test_head_output_is_time_ordered(kernel, frames):
    torch.manual_seed(0)
    head = SpottingHead(dim=32, rows=2, hidden=16, kernel=kernel, tubelet=2).eval()
    feats = torch.randn(1, 8, 10, 10, 32)
    changed = feats.clone()
    changed[:, 5] += 3.0 * torch.randn(10, 10, 32)  # tubelet 5 = frames 10, 11
    with torch.no_grad():
        diff = (head(changed) - head(feats)).abs().sum(-1)[0]
    # only the changed tubelet's frames move (plus the temporal kernel's reach of one tubelet each side)
    assert torch.nonzero(diff > 1e-6).flatten().tolist() == frames


def test_spotter_scores_move_where_the_frames_changed(tiny_encoder):
    spotter = build_heads(tiny_encoder, FinetuneConfig()).eval()
    torch.manual_seed(1)
    video = torch.randn(1, 3, 16, 160, 160)
    changed = video.clone()
    changed[:, :, 8:10] += torch.randn(1, 3, 2, 160, 160)
    with torch.no_grad():
        feats = encoder_features(tiny_encoder, changed) - encoder_features(tiny_encoder, video)
        scores = (spotter(changed, "micro") - spotter(video, "micro")).abs().mean(-1)[0]
    per_tubelet = feats.abs().mean(dim=(0, 2, 3, 4))
    assert int(per_tubelet.argmax()) == 4  # frames 8-9 are tubelet 4, in time order
    assert per_tubelet[4] > 5 * torch.cat([per_tubelet[:3], per_tubelet[6:]]).max()
    assert int(scores.argmax()) in (8, 9)


def test_encoder_from_safetensors_gives_identical_features(tiny_encoder, tmp_path):
    folder = save_encoder(tiny_encoder, tmp_path / "enc")
    video = torch.randn(2, 3, 16, 160, 160)
    with torch.no_grad():
        for source in (folder, folder / "model.safetensors"):
            loaded = load_encoder(source).eval()  # the architecture is the config.json beside the weights
            assert torch.equal(encoder_features(loaded, video), encoder_features(tiny_encoder, video))
    with pytest.raises(ConfigError, match="'lgi_base' contradicts the checkpoint's model config 'lgi_tiny'"):
        load_encoder(folder, "lgi_base")


def test_encoder_from_release_folder_honours_its_layer_norm_eps(tiny_encoder, tmp_path):
    """A release of peer weights declares layer_norm_eps 1e-6 in config.json: the loaded encoder must use it."""
    import json

    folder = save_encoder(tiny_encoder, tmp_path / "enc")
    default = load_encoder(folder, "lgi_tiny")
    assert {m.eps for m in default.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    for source in (folder, folder / "model.safetensors"):
        loaded = load_encoder(source, "lgi_tiny")
        assert {m.eps for m in loaded.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    (folder / "config.json").write_text(json.dumps({**config, "layer_norm_eps": "tiny"}))
    with pytest.raises(ConfigError, match="layer_norm_eps"):
        load_encoder(folder, "lgi_tiny")


def test_encoder_from_deepspeed_layout_checkpoint(tiny_encoder, tmp_path):
    """A Ray run folder holding checkpoint_*/<tag>/mp_rank_00_model_states.pt with the VideoMAE under 'module',
    and the run's config beside `latest` (as pretrain/train_loop.py writes them)."""
    from pretrain.config import PretrainConfig, write_run_config
    from pretrain.mae import VideoMAE

    mae = VideoMAE(tiny_encoder.cfg)
    mae.encoder.load_state_dict(tiny_encoder.state_dict())
    ckpt = tmp_path / "run" / "checkpoint_step_00000010"
    (ckpt / "step_00000010").mkdir(parents=True)
    (ckpt / "latest").write_text("step_00000010")
    state = {"module": {k: v.to(torch.bfloat16) for k, v in mae.state_dict().items()}, "global_steps": 10}
    torch.save(state, ckpt / "step_00000010" / "mp_rank_00_model_states.pt")
    with pytest.raises(DataError, match="holds no model config"):
        load_encoder(tmp_path / "run")
    write_run_config(ckpt, PretrainConfig(model=tiny_encoder.cfg))
    loaded = load_encoder(tmp_path / "run")
    assert loaded.cfg == tiny_encoder.cfg
    for name, value in tiny_encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value.to(torch.bfloat16).float()), name
    with pytest.raises(ConfigError, match="model.name"):
        load_encoder(tmp_path / "run", "lgi_base")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no pretraining checkpoint"):
        load_encoder(tmp_path / "empty")


def test_layer_decay_and_frozen_blocks(tiny_encoder):
    cfg = load_config(None, FinetuneConfig, ["train.mode=partial", "train.trainable_blocks=1"])
    spotter = build_heads(tiny_encoder, cfg)
    groups = param_groups(spotter, cfg.train)
    trainable = {n for n, p in spotter.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.blocks.1.") for n in trainable)
    assert not any(n.startswith(("encoder.blocks.0.", "encoder.patch_embed")) for n in trainable)
    lrs = sorted({g["lr"] for g in groups})
    assert lrs[-1] == pytest.approx(cfg.train.lr) and lrs[0] == pytest.approx(cfg.train.lr * cfg.train.layer_decay)
    for p in spotter.parameters():
        p.requires_grad_(True)


def test_pos_weight_and_focal_loss_handle_imbalance():
    targets = torch.zeros(4, 16, 4)
    targets[0, :4, 1] = 1.0  # 4 micro frames of 64
    weight = auto_pos_weight(targets)
    assert weight[1] == pytest.approx(15.0) and weight[0] == pytest.approx(20.0)  # no macro: capped
    logits = torch.zeros(4, 16, 4, requires_grad=True)
    cfg = FinetuneConfig().train
    for loss in ("bce", "focal"):
        cfg.loss = loss
        value = spotting_loss(logits, targets, cfg, weight)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and grad[0, 0, 1] < 0 < grad[1, 0, 1]  # push positives up, negatives down


def test_train_head_learns_separable_windows():
    torch.manual_seed(0)
    pooled = torch.randn(64, 8, 2, 16)
    targets = torch.zeros(64, 16, 4)
    positive = pooled[:, :, 0, 0] > 0.5  # event wherever one feature is high
    targets[..., 1] = positive.repeat_interleave(2, dim=1).float()
    cfg = load_config(None, FinetuneConfig, ["train.epochs=30", "train.lr=0.01"]).train
    head = SpottingHead(16, 2, 16, 1, 2)
    before = torch.sigmoid(head.forward_pooled(pooled))[..., 1].detach()
    train_head(head, pooled, targets, cfg)
    after = torch.sigmoid(head.forward_pooled(pooled))[..., 1].detach()
    pos = targets[..., 1] > 0.5
    assert after[pos].mean() - after[~pos].mean() > 0.5 > before[pos].mean() - before[~pos].mean()


def test_config_rejects_bad_values(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text("model:\n  head_kernel: 2\n")
    with pytest.raises(ConfigError, match="head_kernel"):
        load_config(path, FinetuneConfig)
    with pytest.raises(ConfigError, match="unique"):
        load_config(None, FinetuneConfig, ["granularities=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="trainmode"):
        load_config(None, FinetuneConfig, ["train.trainmode=frozen"])
    with pytest.raises(ConfigError, match="override 'train.lr=-1'.*train.lr: must be > 0"):
        load_config("configs/finetune/synthetic.yaml", FinetuneConfig, ["train.lr=-1"])


def test_finetune_cli_trains_and_resumes(tiny_spotting_set, tiny_finetune_overrides, tmp_path):
    from finetune import store

    args = [sys.executable, "-m", "finetune", "--config", "configs/finetune/synthetic.yaml",
            f"data.root={tiny_spotting_set}", f"out={tmp_path}",
            *tiny_finetune_overrides]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert store.is_complete(tmp_path / "model")
    spotter, grans = store.load_spotter(tmp_path / "model")
    assert [g.name for g in grans] == ["micro", "macro"] and set(spotter.heads) == {"micro", "macro"}
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already trained" in again.stderr
    bad = subprocess.run([*args[:5], "data.root=/nonexistent/x",
                          f"out={tmp_path}/other"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "/nonexistent/x" in bad.stderr and "videos.csv" in bad.stderr


def test_partial_fine_tuning_updates_only_the_last_block(tiny_spotting_set, tiny_finetune_overrides, tmp_path):
    from data.common.dataset import read_dataset
    from finetune.heads.train import train_heads

    cfg = load_config(None, FinetuneConfig, [*tiny_finetune_overrides, "train.mode=partial", "train.epochs=1",
                                             "train.trainable_blocks=1", f"out={tmp_path}"])
    videos, gt = read_dataset(tiny_spotting_set)
    encoder = load_encoder(None, "lgi_tiny", seed=0)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    spotter = train_heads(cfg, videos.head(1), gt, encoder=encoder)
    after = spotter.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("blocks.1.", "norm.")) for k in changed)
    for p in spotter.parameters():
        p.requires_grad_(True)


def test_the_encoder_learns_with_stochastic_depth_only_when_it_trains(tiny_spotting_set, tiny_finetune_overrides,
                                                                      tmp_path):
    from data.common.dataset import read_dataset
    from finetune.heads.train import train_heads

    videos, gt = read_dataset(tiny_spotting_set)
    common = [*tiny_finetune_overrides, "train.epochs=1", f"out={tmp_path}"]
    partial = load_config(None, FinetuneConfig, [*common, "train.mode=partial", "train.drop_path=0.2",
                                                 "train.grad_checkpointing=true"])
    spotter = train_heads(partial, videos.head(1), gt)
    assert spotter.encoder.cfg.drop_path == 0.2 and spotter.encoder.blocks[-1].drop_path.drop_prob == 0.2
    assert spotter.encoder.grad_checkpointing
    frozen = train_heads(load_config(None, FinetuneConfig, [*common, "train.drop_path=0.2"]), videos.head(1), gt)
    assert frozen.encoder.cfg.drop_path == 0.0  # a frozen encoder keeps its config (and its feature cache)


DEEPSPEED_SAVE = """
import os, sys, torch
import deepspeed
from pretrain.config import PretrainConfig, write_run_config
from pretrain.mae import VideoMAE
from pretrain.model_config import named_config
from safetensors.torch import save_file
torch.manual_seed(0)
model = VideoMAE(named_config("lgi_tiny"))
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config={
    "train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True}, "zero_optimization": {"stage": 2},
    "zero_allow_untested_optimizer": True})
engine.save_checkpoint(os.path.join(sys.argv[1], "checkpoint_step_00000001"), tag="step_00000001")
write_run_config(os.path.join(sys.argv[1], "checkpoint_step_00000001"), PretrainConfig(model=model.cfg))
reference = {k: v.float().contiguous() for k, v in engine.module.state_dict().items() if k.startswith("encoder.")}
save_file(reference, os.path.join(sys.argv[1], "reference.safetensors"))
"""


def test_encoder_from_a_real_deepspeed_zero2_checkpoint(tmp_path):
    """deepspeed.initialize (ZeRO-2, bf16, gloo, one rank) + save_checkpoint, as pretrain/train_loop.py does."""
    import os
    import socket

    from safetensors.torch import load_file

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0"}
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))  # reuse the built comm op
    run = subprocess.run([sys.executable, "-c", DEEPSPEED_SAVE, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = load_encoder(tmp_path, "lgi_tiny").state_dict()
    reference = load_file(str(tmp_path / "reference.safetensors"))
    assert reference and all(torch.equal(loaded[k[len("encoder."):]], v) for k, v in reference.items())


def test_encoder_loader_skips_a_checkpoint_without_complete_commit_markers(tmp_path):
    """A newer checkpoint whose rank markers are incomplete is passed over for the newest complete one."""
    from finetune.encoder.load import find_checkpoint_states
    from pretrain.checkpoint_commit import write_marker

    for step in (2, 4):
        states = tmp_path / f"checkpoint_step_{step:08d}" / "global_step" / "mp_rank_00_model_states.pt"
        states.parent.mkdir(parents=True)
        states.write_bytes(b"weights")
    write_marker(tmp_path / "checkpoint_step_00000002", rank=0, world_size=1, step=2)
    assert find_checkpoint_states(tmp_path).parts[-3] == "checkpoint_step_00000002"
    write_marker(tmp_path / "checkpoint_step_00000004", rank=0, world_size=1, step=4)
    assert find_checkpoint_states(tmp_path).parts[-3] == "checkpoint_step_00000004"
