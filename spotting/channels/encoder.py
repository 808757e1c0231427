"""The `encoder` channel set: pooled encoder features of the stabilised face, as per-frame curves of one video.

Chain (each stage cached when a cache folder is given):
  video (data.faces.face_video: one decode, one face track)
        -> data.faces.stabilise.prepare (canonical time grid, per-frame alignment + ECC, grey crops)
        -> finetune.encoder.features (the motion view of data.faces.motion_view, the encoder per granularity
           window, tokens pooled by landmark region and row, onto the grid)
        -> `pooled` features of every granularity, put on the video's own frames, each standardised over the video.

The defaults are the encoder-input probe's recommendation (docs/results.md): stabilised / plane lighting / "ref"
contrast, regions + token spread, both granularities, per-video standardisation (removes identity offsets).
Channel names depend on the config and the encoder's width only, never on the frame rate.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np

from data.common.config import Config
from data.common.errors import ConfigError, DataError
from data.faces import stabilise as st
from data.faces.face_video import FaceVideo
from data.faces.motion_view import MotionViewConfig
from finetune.encoder import features as mf
from finetune.encoder.load import checkpoint_run_config, find_checkpoint_states
from finetune.windows import Granularity, check_granularities, default_granularities, sample_step
from spotting.channels.vocabulary import ANY, ENCODER, Channel

_BANDS = re.compile(r"^([1-9][0-9]*)bands$")


@dataclasses.dataclass
class EncoderChannelsConfig(Config):
    stabilisation: st.StabiliseConfig = dataclasses.field(default_factory=st.StabiliseConfig)
    view: MotionViewConfig = dataclasses.field(default_factory=MotionViewConfig)
    # "regions+std": landmark-region means and the spread of each region's tokens (the spread carries most of the
    # probe's gain); "regions": the means only; "<k>bands": k horizontal bands (k must divide the token rows)
    pool: str = "regions+std"
    granularities: list[Granularity] = dataclasses.field(default_factory=default_granularities)

    def check(self) -> None:
        if self.pool not in ("regions", "regions+std") and not _BANDS.match(self.pool):
            raise ConfigError(f"unknown pooling {self.pool!r}", field="pool", fix="regions+std, regions or <k>bands")
        check_granularities(self.granularities)


def pooled(feats: dict[str, np.ndarray], pool: str, gran: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """One granularity's grid arrays (finetune.encoder.features) -> ([N, F] features, F (source, signal) names)."""
    rows = feats["rows"]  # [N, H', D]
    n, height, dim = rows.shape
    bands = _BANDS.match(pool)
    if bands:
        k = int(bands.group(1))
        if height % k:
            raise ConfigError(f"{k} bands do not divide the encoder's {height} token rows", field="pool",
                              fix=f"use a divisor of {height}")
        x = rows.reshape(n, k, height // k, dim).mean(2).reshape(n, -1)
        return x, [(f"{gran}.band{b}", f"mean{i}") for b in range(k) for i in range(dim)]
    parts = [("mean", feats["regions"])] + ([("std", feats["region_std"])] if pool == "regions+std" else [])
    x = np.concatenate([v.reshape(n, -1) for _, v in parts], 1)
    names = [(f"{gran}.{region}", f"{kind}{i}") for kind, _ in parts for region in mf.REGION_NAMES for i in range(dim)]
    return x, names


def per_video_standardise(x: np.ndarray) -> np.ndarray:
    """[T, F]: each feature to zero mean, unit std over the video (removes identity offsets)."""
    return ((x - x.mean(0, keepdims=True)) / (x.std(0, keepdims=True) + 1e-6)).astype(np.float32)


def frame_steps(num_frames: int, fps: float, rate_hz: float, num_steps: int) -> np.ndarray:
    """[num_frames] the grid step whose interval [j / rate, (j + 1) / rate) holds each frame's time."""
    steps = np.floor(np.arange(num_frames) / fps * rate_hz + 1e-6).astype(np.int64)
    return np.clip(steps, 0, num_steps - 1)


def shortest_window_frames(cfg: EncoderChannelsConfig, frames: int) -> int:
    """Grid steps the shortest granularity's window spans (the encoder sees `frames` of them)."""
    rate = cfg.stabilisation.rate_hz
    return min(round(sample_step(rate, g.span_s, frames) * frames) for g in cfg.granularities)


def check_video(source: FaceVideo, cfg: EncoderChannelsConfig, frames: int) -> None:
    fps, num_frames = source.fps, source.num_frames
    if fps <= 0 or num_frames < 1:
        raise DataError(f"fps={fps}, num_frames={num_frames} must be positive", path=source.where,
                        fix="fix the video table")
    steps = st.grid_length(num_frames, fps, cfg.stabilisation.rate_hz)
    need = shortest_window_frames(cfg, frames)
    if steps < need:
        raise DataError(f"{num_frames / fps:.2f} s is shorter than the shortest encoder window "
                        f"({need / cfg.stabilisation.rate_hz:.2f} s)", path=source.where,
                        fix="use a longer video or a shorter granularity span")


def cache_dirs(cache_dir, stab: st.StabiliseConfig) -> tuple[Path, Path] | tuple[None, None]:
    """(stabilised-stream cache, feature cache) under `cache_dir`: the prototype's layout (stab30/, feat/ for the
    default stabilisation; a non-default one gets its own pair, since feature digests do not cover it)."""
    if cache_dir is None:
        return None, None
    tag = "" if stab == st.StabiliseConfig() else "_" + hashlib.sha1(stab.key().encode()).hexdigest()[:8]
    root = Path(cache_dir)
    return root / f"stab{stab.rate_hz:g}{tag}", root / f"feat{tag}"


def stable_video(source: FaceVideo, cfg: EncoderChannelsConfig, frames: int, cache_dir=None) -> st.StableVideo:
    """The video's stabilised stream (cached under cache_dir as encoder_channels caches it), checked first: a
    DataError naming the video for one shorter than the shortest window of `frames` grid steps."""
    check_video(source, cfg, frames)
    return st.prepare(source, cfg.stabilisation, cache_dirs(cache_dir, cfg.stabilisation)[0])


def encoder_channels(source: FaceVideo, encoder, cfg: EncoderChannelsConfig,
                     cache_dir=None) -> dict[Channel, np.ndarray]:
    """{Channel(ENCODER, ANY, "<granularity>.<region or band>", "mean<i>" | "std<i>"): float32 [num_frames]}:
    the pooled encoder features of every granularity at the video's own frames, each standardised over the video.

    cache_dir: folder holding stab<rate>/ and feat/ (None: nothing is written). Raises DataError naming the video
    for one shorter than the shortest window or with a face in too few frames."""
    sv = stable_video(source, cfg, encoder.cfg.frames, cache_dir)
    feats = mf.load_or_encode(encoder, sv, cfg.view, cache_dirs(cache_dir, cfg.stabilisation)[1], cfg.granularities)
    steps = frame_steps(source.num_frames, source.fps, sv.rate_hz, len(sv.crops))
    out: dict[Channel, np.ndarray] = {}
    for g in cfg.granularities:
        x, names = pooled(feats[g.name], cfg.pool, g.name)
        curves = per_video_standardise(x[steps].astype(np.float64))
        out.update({Channel(ENCODER, ANY, source, signal): curves[:, i] for i, (source, signal) in enumerate(names)})
    return out


VIEW_FIELDS = ("lighting", "contrast", "gain", "diff_lag_s", "running_tau_s", "channels")  # what the encoder saw


def check_pretraining_view(source, encoder, view: MotionViewConfig) -> None:
    """An encoder pretrained on the motion view must be read through the view it learned: a pretraining
    checkpoint records it (its run config's `motion`); an exported encoder does not, and is taken as given."""
    if encoder.cfg.input != "motion" or source is None or not Path(source).is_dir():
        return
    try:
        learned = checkpoint_run_config(find_checkpoint_states(Path(source))).motion
    except DataError:
        return  # not a pretraining run folder (an encoder folder with its config.json)
    differ = {f: (getattr(learned, f), getattr(view, f)) for f in VIEW_FIELDS
              if getattr(learned, f) != getattr(view, f)}
    if differ:
        raise ConfigError(f"the encoder was pretrained on another motion view: {differ} (pretrained, read)",
                          path=source, field="encoder_channels.view",
                          fix=" ".join(f"encoder_channels.view.{f}={v[0]}" for f, v in differ.items()))
