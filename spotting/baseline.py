"""The flow-only baseline spotter (SOFTNet/MEGC-style cues, no learning): the reference later stages must beat.

Per video and per type (macro, micro), with k derived from the fps and the type's mean duration:
region curves m[i] = motion from frame i to i+k (data.flow.regions; region boxes from the face tracked through the
video by default, see `landmarks`) -> one score per frame. The "apex" score at frame i
is min(m[i-k], m[i]): motion into frame i AND back out of it, so transient expressions peak at their apex while
lasting changes (a head turn that stays, illumination drift) excite only one side. Apexes within k frames
of either end of the video cannot be spotted this way. Then spotting.intervals does
smoothing, the SOFTNet threshold, peaks k apart, intervals around the peaks, NMS, and final_intervals (copies and
micro inside macro dropped).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from data.common.config import Config, setting
from data.common.errors import ConfigError, DataError
from data.common.tables import TYPES, check_video_lengths, empty_intervals, read_videos, write_predictions
from data.faces.face_video import FaceVideo
from data.flow import regions as fl
from data.flow.curves import LANDMARK_SOURCES, frame_curves, track_cache_path, video_curves
from spotting import intervals as iv

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BaselineTypeConfig(Config):
    """How one expression type is spotted."""

    mean_duration_s: float = setting(gt=0)  # sets k = int((mean duration in frames + 1) / 2)
    p: float = setting(ge=0, le=1)  # SOFTNet threshold: mean + p * (max - mean) of the video's score curve
    regions: list[str] = dataclasses.field(default_factory=lambda: list(fl.REGIONS))
    combine: Literal["max", "sum", "mean"] = "max"
    smooth_s: float = setting(0.0, ge=0)  # moving-average window before peak picking, seconds (0 = none)
    extent: Literal["fixed", "half_max"] = "fixed"  # interval = [peak-k, peak+k], or the curve's half-max width
    max_duration_s: float = setting(4.0, gt=0)  # "half_max" never reaches further than half this from the peak
    # monotonicity: net motion over k frames vs the path walked in `hops` hops of k/hops frames (talking goes back
    # and forth); 1 = off
    hops: int = setting(3, ge=1)

    def check(self) -> None:
        bad = sorted(set(self.regions) - set(fl.REGIONS))
        if bad or not self.regions:
            raise ConfigError(f"regions {bad or '[]'} not allowed", field="regions",
                              fix=f"choose from {list(fl.REGIONS)}")


@dataclasses.dataclass
class BaselineConfig(Config):
    # Thresholds and smoothing were chosen on a synthetic dev set (seed 7, 8 videos), not on the demo set.
    # k per type = int((mean_duration_s * fps + 1) / 2): at 30 fps micro 0.37 s -> k 6 and macro 1.2 s -> k 18
    # (the published CAS(ME)^2 values).
    macro: BaselineTypeConfig = dataclasses.field(
        default_factory=lambda: BaselineTypeConfig(1.2, 0.6, smooth_s=0.4))
    # eyes left out of micro: blinks look like micro-expressions there
    micro: BaselineTypeConfig = dataclasses.field(default_factory=lambda: BaselineTypeConfig(
        0.37, 0.35, regions=["brows", "mouth"], smooth_s=0.1, max_duration_s=0.5))
    method: Literal["dis", "dis_fast", "farneback", "tvl1"] = "dis"
    scale: float = setting(1.0, gt=0, le=4)  # resize frames before flow
    # data.flow.regions.FEATURES: flow | strain: region mean; flow_top | strain_top: mean of its top 10% pixels
    feature: Literal["flow", "strain", "flow_top", "strain_top"] = "flow"
    score: Literal["apex", "forward"] = "apex"  # see module doc; "forward" = m[i - k//2] (pair centred on i)
    # Where region boxes come from (data.flow.curves.LANDMARK_SOURCES): tracked-frame = dlib landmarks tracked
    # through each video, per frame (cached); tracked = their per-video median; canonical = one fixed aligned face;
    # first-frame; auto (canonical if square). Measured (megc overall F1, demo set / a 4x2x30 s set of data seed 1):
    # canonical 0.41 / 0.32, tracked 0.48 / 0.40, tracked-frame 0.49 / 0.41 (median wins macro, per-frame
    # micro; the two differ by about one TP).
    landmarks: str = "tracked-frame"
    # data.flow.regions.remove_head_motion: affine (fitted on nose + forehead) | mean (nose-patch translation, as
    # published)
    head_model: Literal["affine", "mean"] = "affine"
    nms_iou: float = setting(0.5, ge=0, le=1)
    # drop a micro interval when more than this fraction of it lies in a macro interval
    micro_inside_macro: float = setting(0.5, ge=0, le=1)
    workers: int = setting(2, ge=1)  # processes computing flow, one video each

    def check(self) -> None:
        if self.landmarks not in LANDMARK_SOURCES:
            raise ConfigError(f"unknown landmark source {self.landmarks!r}", field="landmarks",
                              fix=f"use one of {list(LANDMARK_SOURCES)}")


def type_k(cfg: BaselineConfig, kind: str, fps: float) -> int:
    return fl.k_from_duration(fps, getattr(cfg, kind).mean_duration_s)


def hop_k(k: int, hops: int) -> int:
    return max(1, k // hops)


def needed_ks(cfg: BaselineConfig, fps: float) -> list[int]:
    """Every frame gap the spotter reads: each type's k and, with the monotonicity check, its hop."""
    ks = set()
    for kind in TYPES:
        k, hops = type_k(cfg, kind, fps), getattr(cfg, kind).hops
        ks |= {k, hop_k(k, hops)} if hops > 1 else {k}
    return sorted(ks)


def region_matrix(curves: np.ndarray, cfg: BaselineConfig, tc: BaselineTypeConfig) -> np.ndarray:
    """[T, R] pair motion of the chosen feature and regions, each region's noise floor removed."""
    values = curves[fl.FEATURES.index(cfg.feature)][:, [fl.REGIONS.index(r) for r in tc.regions]]
    # The median is the flow noise floor of that region (texture, compression); without removing it the
    # region with the most texture would dominate `max`.
    return np.clip(values - np.median(values, axis=0), 0, None)


def monotonicity(m_k: np.ndarray, m_hop: np.ndarray, hop: int, hops: int) -> np.ndarray:
    """Net motion over k frames / the path length walked in `hops` hops of `hop` frames, in [0, 1].

    An expression ramps one way (net ~ path, ratio ~1); talking goes back and forth many times within k
    frames (net << path), so its ratio is small even though both move the mouth a lot.
    """
    path = np.zeros_like(m_hop)
    for j in range(hops):
        n = max(0, len(path) - j * hop)  # a video shorter than the hops has fewer terms, not an error
        path[:n] += m_hop[j * hop:j * hop + n]
    return np.clip(m_k / np.maximum(path, m_k + 1e-6), 0.0, 1.0)


def region_score(curves: dict, k: int, cfg: BaselineConfig, tc: BaselineTypeConfig) -> np.ndarray:
    """m[i]: the chosen regions' pair motion (frame i -> i+k), weighted by monotonicity, then combined."""
    m = region_matrix(curves[k], cfg, tc)
    if tc.hops > 1:
        hop = hop_k(k, tc.hops)
        m = m * monotonicity(m, region_matrix(curves[hop], cfg, tc), hop, tc.hops)
    return {"max": np.max, "sum": np.sum, "mean": np.mean}[tc.combine](m, axis=1)


def frame_score(m: np.ndarray, k: int, num_frames: int, how: str) -> np.ndarray:
    """Per-frame score from pair motion m[i] (frame i -> i+k; valid for i < num_frames - k)."""
    valid = np.zeros(num_frames)
    n = max(0, num_frames - k)
    valid[:n] = m[:n]
    score = np.zeros(num_frames)
    if how == "apex":
        # Within k frames of either end one side is missing; the other alone cannot tell an expression from
        # a lasting change (it fires on a macro's offset phase near the end), so those frames score 0.
        if n > k:
            score[k:n] = np.minimum(valid[:n - k], valid[k:n])
    elif how == "forward":
        score[k // 2:k // 2 + n] = valid[:n]
    else:
        raise ConfigError(f"unknown score {how!r}", field="score", fix="use 'apex' or 'forward'")
    return score


def type_score(curves: dict, cfg: BaselineConfig, kind: str, fps: float, num_frames: int,
               regions: list[str] | None = None) -> np.ndarray:
    """The per-frame score of one expression type (optionally from a subset of its regions)."""
    tc: BaselineTypeConfig = getattr(cfg, kind)
    if regions is not None:
        tc = dataclasses.replace(tc, regions=list(regions))
    k = type_k(cfg, kind, fps)
    return frame_score(region_score(curves, k, cfg, tc), k, num_frames, cfg.score)


def spot_type(curves: dict, cfg: BaselineConfig, kind: str, fps: float, num_frames: int) -> list[iv.Interval]:
    tc: BaselineTypeConfig = getattr(cfg, kind)
    k = type_k(cfg, kind, fps)
    score = type_score(curves, cfg, kind, fps, num_frames)
    window = max(1, round(tc.smooth_s * fps))
    return iv.spot_curve(score, k, tc.p, kind, window, distance=k, extent=tc.extent, nms_iou=cfg.nms_iou,
                         max_half=max(k, round(tc.max_duration_s * fps / 2)))


def spot_curves(curves: dict, cfg: BaselineConfig, fps: float, num_frames: int) -> list[iv.Interval]:
    """Typed intervals of one video from its cached region curves (k -> [F, T, R])."""
    found = {kind: spot_type(curves, cfg, kind, fps, num_frames) for kind in TYPES}
    return iv.final_intervals(found["macro"], found["micro"], cfg.micro_inside_macro)


def video_region_curves(source, cfg: BaselineConfig, cache_path, landmarks=None, bar: tqdm | None = None) -> dict:
    """Cached flow region curves of one video (a path or a data.faces.face_video.FaceVideo) for every k the config
    needs (data.flow.curves.video_curves). `landmarks` overrides cfg.landmarks: a [68, 2] fixed set or
    [T, 68, 2] tracked set. `bar` counts the flow fields computed."""
    if not isinstance(source, FaceVideo):
        source = FaceVideo(source, track_cache=track_cache_path(cache_path))
    return video_curves(source, cache_path, needed_ks(cfg, source.fps), cfg.method, cfg.scale,
                        cfg.landmarks if landmarks is None else landmarks, bar=bar, head_model=cfg.head_model)


def frame_region_curves(frames: np.ndarray, fps: float, cfg: BaselineConfig, landmarks=None,
                        name: str = "<frames>", bar: tqdm | None = None) -> dict:
    """video_region_curves of RGB frames held in memory (data.flow.curves.frame_curves: nothing cached)."""
    return frame_curves(frames, fps, needed_ks(cfg, fps), cfg.method, cfg.scale,
                        cfg.landmarks if landmarks is None else landmarks, cfg.head_model, name, bar)


def spot_video(path, cfg: BaselineConfig, cache_path, landmarks=None) -> list[iv.Interval]:
    """Spot one video from its (cached) region curves."""
    result = video_region_curves(path, cfg, cache_path, landmarks)
    return spot_curves(result["curves"], cfg, result["fps"], result["num_frames"])


def _spot_one(args) -> list[iv.Interval]:
    path, cfg, cache, threads, log_level = args
    # A spawned worker starts with logging unconfigured (no-op in-process): keep its INFO lines, e.g. how many
    # frames had no face, in the same format as data.common.cli.
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if threads:
        import cv2

        cv2.setNumThreads(threads)  # one OpenCV thread per worker process: the workers are the parallelism
    return spot_video(path, cfg, cache)


def spot_dataset(cfg: BaselineConfig, videos: pd.DataFrame, cache_dir, workers: int | None = None) -> pd.DataFrame:
    """Predictions for every video of a video table; flow curves cached in CACHE_DIR/<video>.npz.

    Videos run in `workers` processes (default cfg.workers; flow is per-video work, so the pool only pays off above
    one video and when the flow is not cached yet).
    """
    workers = min(cfg.workers if workers is None else workers, len(videos))
    level = logging.getLogger().getEffectiveLevel()
    jobs = [(row.path, cfg, Path(cache_dir) / f"{row.video}.npz", 1 if workers > 1 else 0, level)
            for row in videos.itertuples(index=False)]
    bar = tqdm(total=len(jobs), desc="flow baseline", unit="video")
    if workers > 1:
        import concurrent.futures as cf
        import multiprocessing

        # spawn, not fork: the parent may hold OpenCV/decord threads, which fork does not copy safely.
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_spot_one, job) for job in jobs]
            for _ in cf.as_completed(futures):
                bar.update(1)
            found = [f.result() for f in futures]
    else:
        found = []
        for job in jobs:
            found.append(_spot_one(job))
            bar.update(1)
    bar.close()
    frames = [iv.to_frame(f, str(row.subject), str(row.video)) for f, row in zip(found, videos.itertuples())]
    return pd.concat([empty_intervals(with_score=True)] + frames, ignore_index=True)


def run_baseline(cfg: BaselineConfig, data_dir, out_dir) -> Path:
    """Spot every video of a dataset folder (videos.csv) -> OUT/predictions.csv; curves cached in OUT/curves."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    table = data_dir / "videos.csv"
    if not table.is_file():
        raise DataError("dataset folder has no videos.csv", path=data_dir,
                        fix="point --data at a folder made by `python -m data synth` or an adapter")
    videos = read_videos(table)
    check_video_lengths(videos, table)
    predictions = spot_dataset(cfg, videos, out_dir / "curves")
    path = write_predictions(predictions, out_dir / "predictions.csv")
    log.info("%d predictions for %d videos -> %s", len(predictions), len(videos), path)
    return path
