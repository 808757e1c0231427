"""The synthetic expressive-face benchmark (DESIGN.md §6): real faces, warped expressions, exact ground truth.

`generate(cfg, out_dir)` writes a dataset folder:
  videos/<video>.mp4   H.264, face-centred size x size frames
  intervals.csv        ground truth (data.common.tables interval table; frames 0-based inclusive, apex = peak amplitude)
  videos.csv           the video table (paths relative to the folder)
  config.yaml          the config used
  meta/<video>.json    identity, per-frame head pose and illumination, blinks, talking, per-event parameters
A video is done once its meta file exists (written last), so a rerun skips it; `force` regenerates everything.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from data.common.atomic import write_json, write_text
from data.common.config import to_dict
from data.common.errors import ConfigError, DataError
from data.common.tables import INTERVAL_COLUMNS, VIDEO_COLUMNS, write_intervals, write_videos
from data.common.video_io import video_info, write_mp4
from data.synthetic import motion
from data.synthetic.config import (
    AppearanceConfig,
    BlinkConfig,
    EventConfig,
    HeadConfig,
    IdentityConfig,
    LightConfig,
    SyntheticConfig,
    TalkConfig,
    load_synthetic_config,
)
from data.synthetic.faces import build_identity
from data.synthetic.render import render_frames

__all__ = ["SyntheticConfig", "IdentityConfig", "EventConfig", "BlinkConfig", "TalkConfig", "HeadConfig",
           "LightConfig", "AppearanceConfig", "load_synthetic_config", "generate", "render_video", "video_ids",
           "neutral_landmarks", "read_meta"]

log = logging.getLogger(__name__)


def subject_id(subject_index: int) -> str:
    return f"s{subject_index + 1:02d}"


def video_id(subject_index: int, video_index: int) -> str:
    return f"{subject_id(subject_index)}_v{video_index + 1:02d}"


def video_ids(cfg: SyntheticConfig) -> list[tuple[int, int, str]]:
    """(subject index, video index, video id) for every video of the dataset, e.g. (0, 0, 's01_v01')."""
    return [(s, v, video_id(s, v)) for s in range(cfg.subjects) for v in range(cfg.videos_per_subject)]


def num_frames(cfg: SyntheticConfig) -> int:
    return int(round(cfg.duration_s * cfg.fps))


def _rounded(values, digits: int = 3) -> list:
    return [round(float(v), digits) for v in values]


def render_video(cfg: SyntheticConfig, subject_index: int, video_index: int, identity=None):
    """Frames uint8 [T, S, S, 3] before compression, plus the meta dict (ground truth inside).

    Deterministic: the video's own seed is (cfg.seed, subject, video), independent of the other videos.
    """
    identity = identity or build_identity(cfg, subject_index)
    rng = np.random.default_rng([cfg.seed, 2, subject_index, video_index])
    n = num_frames(cfg)
    times = np.arange(n) / cfg.fps
    events = motion.schedule_events(rng, cfg)
    blinks = motion.schedule_blinks(rng, cfg, events)
    talking = motion.schedule_talking(rng, cfg, events)
    pose = motion.head_motion(rng, cfg, times, events)
    light = motion.illumination(rng, cfg, times)
    noise_sigma = float(rng.uniform(*cfg.noise_sigma))
    curves = motion.au_curves(events, blinks, talking, times)
    shading = motion.appearance_weights(curves, cfg.appearance.full_at_iod) if cfg.appearance.enabled else None
    frames = render_frames(identity, curves, pose, light, noise_sigma, cfg.size, rng, shading)
    blink_frames = sorted({f for b in blinks for f in range(b["onset"] + 1, b["offset"])})
    meta = {
        "subject": subject_id(subject_index), "video": video_id(subject_index, video_index),
        "fps": cfg.fps, "num_frames": n, "size": cfg.size, "crf": cfg.crf, "noise_sigma": noise_sigma,
        "identity": {**identity.params, "neutral_landmarks": [_rounded(p, 2) for p in identity.landmarks]},
        "events": events, "blinks": blinks, "blink_frames": blink_frames, "talking": talking,
        "head": {key: _rounded(pose[key], 4) for key in ("tx", "ty", "rot_deg", "scale")},
        "head_moves": pose["moves"],
        "illumination": {key: _rounded(value, 4) for key, value in light.items()},
    }
    return frames, meta


def _content(config) -> dict | None:
    """What decides a folder's videos: its config less where it lives. Appearance that is off (or absent: a folder
    written before the option existed) is warp-only, whatever strengths the section holds."""
    if not isinstance(config, dict):
        return None
    config = {k: v for k, v in config.items() if k != "out_dir"}
    appearance = config.get("appearance")
    if not (isinstance(appearance, dict) and appearance.get("enabled")):
        config["appearance"] = {"enabled": False}
    return config


def _check_out_dir(cfg: SyntheticConfig, out: Path, force: bool) -> None:
    """Refuse to resume into a folder made from a different config (the videos would not match)."""
    saved = out / "config.yaml"
    if force or not saved.is_file():
        return
    try:
        previous = _content(yaml.safe_load(saved.read_text()))
    except yaml.YAMLError:
        previous = None
    current = _content(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    if previous != current:
        keys = sorted(k for k in set(current) | set(previous or {})
                      if (previous or {}).get(k) != current.get(k))
        raise ConfigError(f"the folder holds a dataset made with a different config (differs in {keys})",
                          path=saved, field=keys[0] if keys else None,
                          fix="pass --force to regenerate, or choose another --out")


def _tables(cfg: SyntheticConfig, out: Path):
    rows, videos = [], []
    for _, _, vid in video_ids(cfg):
        meta = read_meta(out, vid)
        for e in meta["events"]:
            rows.append({"subject": meta["subject"], "video": vid, "onset": e["onset"], "apex": e["apex"],
                         "offset": e["offset"], "type": e["type"], "emotion": e["emotion"]})
        videos.append({"subject": meta["subject"], "video": vid, "path": f"videos/{vid}.mp4",
                       "fps": meta["fps"], "num_frames": meta["num_frames"]})
    intervals = pd.DataFrame(rows, columns=INTERVAL_COLUMNS)
    return intervals, pd.DataFrame(videos, columns=VIDEO_COLUMNS)


def _is_written(out: Path, vid: str) -> bool:
    """A video counts as written when its meta file (written last) exists and the mp4 decodes to the meta's
    frame count: one cut short (a full disk, an interrupted copy of the folder) is rendered again."""
    video, meta = out / "videos" / f"{vid}.mp4", out / "meta" / f"{vid}.json"
    if not (video.is_file() and meta.is_file()):
        return False
    try:
        expected = json.loads(meta.read_text())["num_frames"]
        found = video_info(video)["num_frames"]
    except (OSError, ValueError, KeyError, DataError) as e:
        log.warning("%s: unreadable (%s): rendering it again", video, e)
        return False
    if found != expected:
        log.warning("%s: %d frames, its meta file says %d: rendering it again", video, found, expected)
    return found == expected


def generate(cfg: SyntheticConfig, out_dir=None, force: bool = False, progress: bool = True) -> Path:
    """Write the dataset folder (see module doc); returns its path. Finished videos are skipped unless `force`."""
    from tqdm import tqdm

    out = Path(out_dir or cfg.out_dir)
    _check_out_dir(cfg, out, force)
    write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    todo = [(s, v, vid) for s, v, vid in video_ids(cfg) if force or not _is_written(out, vid)]
    skipped = len(video_ids(cfg)) - len(todo)
    if skipped:
        log.info("%d of %d videos already written in %s: skipping them", skipped, len(video_ids(cfg)), out)
    identities: dict[int, object] = {}
    bar = tqdm(todo, desc="synth", unit="video", disable=not progress)
    for s, v, vid in bar:
        if s not in identities:
            identities = {s: build_identity(cfg, s)}  # one identity in memory at a time
        t0 = time.perf_counter()
        frames, meta = render_video(cfg, s, v, identities[s])
        write_mp4(out / "videos" / f"{vid}.mp4", frames, cfg.fps, crf=cfg.crf)
        write_json(out / "meta" / f"{vid}.json", meta)
        bar.set_postfix(video=vid, fps=f"{len(frames) / (time.perf_counter() - t0):.0f}")
    intervals, videos = _tables(cfg, out)
    write_intervals(intervals, out / "intervals.csv")
    write_videos(videos, out / "videos.csv")
    log.info("synthetic dataset: %d videos, %d macro + %d micro events in %s", len(videos),
             int((intervals["type"] == "macro").sum()), int((intervals["type"] == "micro").sum()), out)
    return out


def read_meta(dataset_dir, video_id: str) -> dict:
    path = Path(dataset_dir) / "meta" / f"{video_id}.json"
    if not path.is_file():
        raise DataError("no meta file for this video", path=path, field="video",
                        fix="check the video id (e.g. s01_v01) or run `python -m data synth` first")
    return json.loads(path.read_text())


def neutral_landmarks(dataset_dir, video_id: str) -> np.ndarray:
    """The identity's neutral 68 landmarks [68, 2] in frame coordinates (before head motion) of a generated video."""
    return np.asarray(read_meta(dataset_dir, video_id)["identity"]["neutral_landmarks"], np.float32)
