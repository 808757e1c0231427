"""Pretraining on what the spotter sees (issue 15): stabilised shards, the motion view, the "view" target and its
floor, and a real Ray + DeepSpeed run whose encoder then feeds the spotter's encoder channels."""
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SPOTTING_OVERRIDES

from data.clips.targets import FLOW_UNIT_PX, flow_target, make_target, tubelets
from data.common.config import replace
from data.common.errors import ConfigError, DataError
from data.common.video_io import read_frames
from data.faces.face_video import FaceVideo
from data.faces.motion_view import MotionViewConfig, ViewStream, motion_view, stream_windows
from data.shards.format import shard_urls
from data.shards.pack import PackConfig, find_sources, pack
from data.shards.stabilised import normalised_grid
from data.synthetic.config import load_synthetic_config
from data.synthetic.generate import generate
from finetune.encoder import features as mf
from finetune.windows import Granularity
from pretrain.config import load_pretrain_config
from pretrain.mae import VideoMAE
from pretrain.model_config import named_config
from pretrain.motion_input import check_motion_shards

REPO = Path(__file__).resolve().parents[1]
MOTION = REPO / "configs/pretrain/lgi_tiny_motion.yaml"


def _load_benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """1 synthetic 8 s video (+ a second subject) packed stabilised: 32-step clips every 16 steps."""
    root = tmp_path_factory.mktemp("motion")
    cfg = load_synthetic_config(None, TINY_SPOTTING_OVERRIDES + ["subjects=2"])
    videos = generate(cfg, root / "data", progress=False)
    pcfg = PackConfig(source="list", source_path=str(videos / "videos.csv"), out_dir=str(root / "shards"),
                      crop="stabilised", stabilise_cache=str(root / "stab"), clip_frames=32, clip_stride=16,
                      clips_per_shard=7, crf=4, workers=1)
    return pcfg, pack(pcfg, progress=False)


def test_stabilised_shards_hold_the_spotters_normalised_grid(packed):
    pcfg, shards = packed
    sources = {s["video"]: s for s in find_sources(pcfg)}
    grids = {video: normalised_grid(pcfg, src) for video, src in sources.items()}
    clips = 0
    for url in shard_urls(shards):
        with tarfile.open(url) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        for name, raw in members.items():
            if not name.endswith(".json"):
                continue
            meta = json.loads(raw)
            assert (meta["crop"], meta["lighting"], meta["fps"], meta["num_frames"]) == ("stabilised", "plane",
                                                                                        30.0, 32)
            frames = read_frames(members[name[:-5] + ".mp4"])
            expected = grids[meta["video"]][meta["start_frame"]:meta["start_frame"] + 32]
            error = np.abs(frames[..., 0].astype(float) - expected)
            assert error.mean() < 1.0 and np.percentile(error, 99) <= 3, (error.mean(), error.max())
            clips += 1
    # 240 grid steps per video: starts 0, 16, ..., 208
    assert clips == 2 * 14


def test_motion_view_is_the_spotters_window_input():
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 256, (60, 160, 160)).astype(np.uint8)
    window = mf.grid_windows(60, 30.0, Granularity("micro", 0.5, 0.25), 16)[1]
    for contrast in ("ref", "mean", "diff", "none"):
        view = MotionViewConfig(contrast=contrast)
        spotter = stream_windows(ViewStream(grid.astype(np.float32), None, None, 30.0), [window], view)
        assert np.array_equal(motion_view(grid[window.indices][None], view, 30.0), spotter), contrast


def test_view_and_energy_targets_and_the_floor_is_the_best_constant():
    torch.manual_seed(0)
    cfg = replace(named_config("lgi_tiny"), {"input": "motion", "target": "view"})
    model = VideoMAE(cfg).eval()
    video = torch.randn(2, 3, cfg.frames, cfg.img_size, cfg.img_size) * 0.3
    target = make_target(video, "view", cfg.tubelet, cfg.patch, "motion")
    assert torch.equal(target, tubelets(video, cfg.tubelet, cfg.patch).reshape(2, cfg.num_tokens, -1))
    mask = torch.from_numpy(np.stack([cfg.geometry.mask_generator()(np.random.default_rng(i)) for i in range(2)]))
    with torch.no_grad():
        out = model(video, mask)
    masked = target.gather(1, out["masked_index"][..., None].expand(-1, -1, target.shape[-1]))
    assert torch.isclose(out["floor"], (masked - masked.mean((0, 1))).square().mean())
    # energy: mean |value| of each 4 x 4 cell of each frame, token 0 = frames 0-1, rows 0-15, columns 0-15
    energy = make_target(video, "energy", cfg.tubelet, cfg.patch, "motion")
    assert energy.shape == (2, cfg.num_tokens, replace(cfg, {"target": "energy"}).patch_values) == (2, 800, 32)
    cell = video[0, :, 1, 4:8, 8:12].abs().mean()  # frame 1, cell row 1, cell column 2
    assert torch.isclose(energy[0, 0, 16 + 4 + 2], cell)
    # the normalised targets' floor is ~1 whatever the input
    rgb = VideoMAE(named_config("lgi_tiny")).eval()
    with torch.no_grad():
        assert 0.9 < float(rgb(video, mask)["floor"]) < 1.01


def shifted_clip(px_per_frame: float, rows: slice = slice(0, 160), frames: int = 16) -> np.ndarray:
    """uint8 [1, T, 160, 160]: a smooth random texture whose `rows` move left by `px_per_frame` each frame."""
    import cv2

    base = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (200, 200)).astype(np.float32), (0, 0), 2.0)
    clip = []
    for t in range(frames):
        moved = cv2.warpAffine(base, np.float32([[1, 0, -px_per_frame * t], [0, 1, 0]]), (200, 200))[20:180, 20:180]
        still = base[20:180, 20:180].copy()
        still[rows] = moved[rows]
        clip.append(still)
    return np.clip(np.stack(clip), 0, 255).astype(np.uint8)[None]


def cell_dx(target: torch.Tensor, t: int, rows: slice, columns: slice = slice(2, 8)) -> float:
    """Mean dx (px) of frame t over the token rows and columns given."""
    cells = target.reshape(8, 10, 10, 2, 4, 4, 2)  # t', h', w', frame, cell row, cell column, (dx, dy)
    return float(cells[t // 2, rows, columns, t % 2, :, :, 0].mean() * FLOW_UNIT_PX)


def test_flow_target_is_each_cells_motion_since_the_first_frame_less_the_heads():
    """The mouth band moves (an expression), the rest of the face stays: the target is the band's motion; a
    whole face moving (the head) is removed, as the cues remove it."""
    mouth = flow_target(shifted_clip(0.3, rows=slice(110, 150)), tubelet=2, patch=16)
    assert mouth.shape == (1, 800, 2 * 16 * 2)  # tokens x (frame, cell row, cell column, dx/dy)
    for t in range(16):
        assert abs(cell_dx(mouth, t, slice(7, 9)) + 0.3 * t) < 0.1 + 0.03 * t, t  # moving left: negative dx
        assert abs(cell_dx(mouth, t, slice(1, 4))) < 0.15, t  # forehead and eyes stay
    cells = mouth.reshape(8, 10, 10, 2, 4, 4, 2)
    assert torch.equal(cells[0, :, :, 0], torch.zeros_like(cells[0, :, :, 0]))  # frame 0 moved 0 from itself
    head = flow_target(shifted_clip(0.3), tubelet=2, patch=16)  # everything moves together
    assert max(abs(cell_dx(head, t, slice(2, 8))) for t in range(16)) < 0.15


def test_flow_magnitude_target_is_the_length_of_the_flow_target():
    clip = shifted_clip(0.3, rows=slice(110, 150))
    flow = flow_target(clip, tubelet=2, patch=16).reshape(1, 800, 32, 2)
    magnitude = flow_target(clip, tubelet=2, patch=16, kind="flow_magnitude")
    assert magnitude.shape == (1, 800, 2 * 16)  # one value per frame and cell
    # the cell mean of the lengths is at least the length of the cell mean, equal where a cell moves rigidly
    assert (magnitude + 1e-5 >= flow.square().sum(-1).sqrt()).all()
    assert magnitude.reshape(8, 10, 10, 2, 16)[7, 7:9, 2:8, 1].mean() * FLOW_UNIT_PX == pytest.approx(4.5, abs=0.5)


def test_the_loader_makes_the_motion_view_and_the_flow_target(packed):
    """Stabilised shards through the real loader (decord, webdataset): the batch holds the view and every
    token's flow target, each equal to the functions applied to the clip the loader decoded."""
    from data.shards.loader import LoaderConfig, make_loader

    cfg = named_config("lgi_tiny")
    view = MotionViewConfig(contrast="none", gain=1.0)  # the view is then grey - 128: the clip can be read back
    loader = LoaderConfig(shards=packed[1], batch_size=2, num_workers=1, output="uint8", scales=(1.0,),
                          max_distort=0, frame_stride=1, repeats=2, shuffle_buffer=0)
    batch = next(iter(make_loader(loader, cfg.geometry, rank=0, world_size=1, view=view, target="flow")))
    video, target = batch["video"], batch["target"]
    assert video.dtype == torch.float32 and video.shape == (2, 3, 16, 160, 160)
    grey = (video[:, 0] + 128.0).round().clamp(0, 255).to(torch.uint8).numpy()
    assert torch.equal(target, flow_target(grey, cfg.tubelet, cfg.patch))
    assert torch.equal(target[0], target[1])  # two masked views of one decoded clip: one target, computed once
    assert not torch.equal(batch["mask"][0], batch["mask"][1])
    model = VideoMAE(replace(cfg, {"input": "motion", "target": "flow"})).eval()
    with torch.no_grad():
        out = model(video, batch["mask"], target)
    masked = target.gather(1, out["masked_index"][..., None].expand(-1, -1, target.shape[-1]))
    assert torch.isclose(out["loss"], (out["pred"] - masked).square().mean())


def test_motion_config_and_shard_errors_name_the_field(ramp_shards, packed):
    with pytest.raises(ConfigError, match="motion.contrast"):
        load_pretrain_config(MOTION, ["motion.contrast=video"])
    icfg = MotionViewConfig()
    with pytest.raises(DataError, match="crop") as e:
        check_motion_shards(ramp_shards, icfg)
    assert "pack_stabilised.yaml" in str(e.value)
    with pytest.raises(DataError, match="lighting"):
        check_motion_shards(packed[1], MotionViewConfig(lighting="gain"))
    check_motion_shards(packed[1], icfg)  # the stabilised set passes


@pytest.mark.slow
def test_motion_pretraining_on_ray_feeds_the_spotters_encoder_channels(packed, tmp_path):
    """~1 min: 2 Ray workers x DeepSpeed (gloo) on the stabilised shards; the checkpoint says what input its
    encoder needs, and the spotter's encoder channels run on it."""
    import ray
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from finetune.encoder.load import load_encoder
    from pretrain.trainer import check_inputs, fit
    from spotting.channels.encoder import EncoderChannelsConfig, encoder_channels

    pcfg, shards = packed
    cfg = load_pretrain_config(MOTION, [f"data.shards={shards}", "data.batch_size=2", "data.frame_strides=[1,2]",
                                        f"checkpoint.storage_path={tmp_path}", "schedule.total_steps=6",
                                        "schedule.warmup_steps=2", "checkpoint.every_steps=3",
                                        "checkpoint.log_every=1", "scaling.num_workers=2"])
    check_inputs(cfg)
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir)
    try:
        result = fit(cfg)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert result.metrics["step"] == 6 and np.isfinite(result.metrics["loss"])
    assert 0 < result.metrics["floor"] < 1  # the motion view is small: 1/16 of grey-level changes
    events = EventAccumulator(str(tmp_path / cfg.checkpoint.name / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("pretrain/floor")) == 6
    curves = _load_benchmark("pretrain_curves")
    summary = curves.plot_loss(tmp_path / cfg.checkpoint.name, tmp_path / "loss.png")
    assert summary["steps"] == 6 and (tmp_path / "loss.png").stat().st_size > 10_000
    assert np.isclose(summary["loss/floor"], summary["loss"] / summary["floor"], rtol=0.5)
    encoder = load_encoder(str(tmp_path / cfg.checkpoint.name), "lgi_tiny", 0)
    assert (encoder.cfg.input, encoder.cfg.target) == ("motion", "energy")
    src = find_sources(pcfg)[0]
    channels = encoder_channels(FaceVideo(src["path"], src["video"], src["fps"]), encoder, EncoderChannelsConfig())
    assert len(channels) == 2 * 2 * 5 * encoder.cfg.dim  # granularities x (mean, std) x regions x width
    assert all(np.isfinite(v).all() and len(v) == src["num_frames"] for v in channels.values())


def test_spotting_heads_refuse_a_motion_encoder(tiny_spotting_set, tmp_path):
    """The heads feed RGB crops: a motion-pretrained encoder there is a named error, not silent nonsense."""
    from data.common.dataset import read_dataset
    from finetune.heads.config import FinetuneConfig
    from finetune.heads.features import compute_features
    from pretrain.lgi_former import LGIEncoder

    encoder = LGIEncoder(replace(named_config("lgi_tiny"), {"input": "motion"}))
    videos, _ = read_dataset(tiny_spotting_set)
    with pytest.raises(ConfigError, match="model.encoder") as e:
        compute_features(encoder, videos, FinetuneConfig(), tmp_path)
    assert "channels=[encoder]" in str(e.value)


def test_shards_strides_and_resume_rules(packed, tmp_path):
    """rgb on stabilised shards, strides longer than the clips, energy on an odd patch, resuming a motion run
    with another view: each a named error. Stabilisation fields leave other shard sets' plans unchanged."""
    import dataclasses

    from data.shards.pack import plan_fingerprint
    from pretrain.train_loop import check_same_model
    from pretrain.trainer import check_inputs

    pcfg, shards = packed
    with pytest.raises(ConfigError, match="model.input"):
        check_inputs(load_pretrain_config(REPO / "configs/pretrain/lgi_tiny.yaml", [f"data.shards={shards}"]))
    with pytest.raises(ConfigError, match="data.frame_strides") as e:
        check_inputs(load_pretrain_config(MOTION, [f"data.shards={shards}"]))  # stride 6 needs 91 of 32 frames
    assert "91" in str(e.value)
    check_inputs(load_pretrain_config(MOTION, [f"data.shards={shards}", "data.frame_strides=[1,2]"]))
    with pytest.raises(ConfigError, match="patch"):
        replace(named_config("lgi_tiny"), {"target": "energy", "patch": 10})
    ours = load_pretrain_config(MOTION, [f"data.shards={shards}"])
    with pytest.raises(ConfigError, match="motion.contrast"):
        check_same_model(ours, load_pretrain_config(MOTION, [f"data.shards={shards}", "motion.contrast=mean"]), "x")
    centre = PackConfig(source="folder", source_path="v", out_dir=str(tmp_path))
    sources = [{"path": "a.mp4", "num_frames": 100}]
    assert plan_fingerprint(centre, sources) == plan_fingerprint(dataclasses.replace(centre, lighting="gain"), sources)
    stable = dataclasses.replace(centre, crop="stabilised")
    assert plan_fingerprint(stable, sources) != plan_fingerprint(dataclasses.replace(stable, lighting="gain"), sources)
