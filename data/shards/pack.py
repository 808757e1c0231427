"""Pack face clips from source videos into WebDataset shards (DESIGN.md §3 "Pretraining shard").

Plan first, then work: every source video is cut into fixed clip slots (start frames `clip_stride` apart), the
slots are dealt in order into shards of `clips_per_shard`, and each shard is one independent task (decode the
frames it needs once per source, crop, encode H.264, write the tar atomically). The plan depends only on the
config and the sources, so a re-run skips every shard with a done record (resume), and a finished shard is
never rewritten (immutability). Shards are built in a process pool; the manifest is assembled at the end.
For very large folders, pass a video table (.csv with fps and num_frames) instead: it spares probing
every video with decord on each run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Literal

import numpy as np

from data.common.atomic import stale_temps
from data.common.cli import Terminated, exit_on_sigterm
from data.common.config import Config, setting
from data.common.errors import ConfigError, DataError
from data.common.storage import filesystem, is_url, join
from data.common.tables import read_videos
from data.common.video_io import encode_mp4, find_videos, read_frames, video_info
from data.faces.align import align_video
from data.faces.motion_view import LIGHTING
from data.faces.stabilise import StabiliseConfig, grid_length, one_of
from data.faces.track import TRACK_ARRAYS, track_faces
from data.shards.format import (
    DEFAULT_SHARDS,
    FORMAT,
    MANIFEST,
    done_path,
    fingerprint,
    read_done,
    read_manifest,
    shard_name,
    write_done,
    write_manifest,
    write_shard,
)
from data.shards.stabilised import stabilised_clips

log = logging.getLogger(__name__)

# Config fields that do not change shard contents, left out of the plan fingerprint.
_RUNTIME_FIELDS = ("workers", "out_dir", "stabilise_cache")
_STABILISED_FIELDS = ("stabilisation", "lighting")  # read only by crop=stabilised


@dataclasses.dataclass
class PackConfig(Config):
    """Sources are video files: a folder, or a list file. Synthetic videos are made by `python -m data synth`
    first (its videos.csv is a list file)."""
    source: Literal["folder", "list"] = "folder"
    # folder of videos (one sub-folder per subject, or flat) | list file (.txt: one path a line; .csv: video table)
    source_path: str = "videos"
    out_dir: str = DEFAULT_SHARDS
    clip_frames: int = setting(64, ge=1)  # frames stored per clip
    # keep every n-th source frame (>1 stores pre-strided short clips: cheaper to decode)
    frame_step: int = setting(1, ge=1)
    clip_stride: int = setting(32, ge=1)  # source frames between consecutive clip starts
    size: int = setting(160, ge=2)  # clips are size x size
    # face: one landmark alignment per clip (data.faces.align); center: square crop; stabilised: the stream the
    # spotter's encoder sees (data.shards.stabilised: per-frame stabilisation on the `stabilisation.rate_hz` grid,
    # then `lighting` normalisation, stored grey; clip_frames, frame_step and clip_stride count grid steps)
    crop: Literal["center", "face", "stabilised"] = "center"
    stabilisation: StabiliseConfig = dataclasses.field(default_factory=StabiliseConfig)
    lighting: str = "plane"  # data.faces.stabilise.LIGHTING, for crop=stabilised
    stabilise_cache: str | None = None  # folder for the stabilised streams (a source split over shards is done once)
    clips_per_shard: int = setting(256, ge=1)
    crf: int = setting(23, ge=0, le=51)  # x264's range
    gop: int = setting(16, ge=1)  # keyframe interval: a reader jumps to the keyframe before the first frame it needs
    fast_decode: bool = True  # x264 tune=fastdecode, no B-frames: ~30% less decode CPU, ~15% larger clips
    workers: int = setting(2, ge=1)

    def check(self) -> None:
        if self.size % 2:
            raise ConfigError(f"H.264 (yuv420p) needs an even size, got {self.size}", field="size", fix="use e.g. 160")
        one_of(self.lighting, LIGHTING, "lighting")
        if self.crop == "stabilised" and self.stabilisation.size != self.size:
            raise ConfigError(f"stabilisation.size {self.stabilisation.size} differs from size {self.size}",
                              field="stabilisation.size", fix="set both to the model's img_size")
        if not self.source_path:
            raise ConfigError("no source given", field="source_path",
                              fix="set source_path to a video folder or a list file")


# ---- sources ---------------------------------------------------------------------------------------------

def find_sources(cfg: PackConfig) -> list[dict]:
    """Source videos as dicts(subject, video, path, fps, num_frames), in a stable order."""
    root = Path(cfg.source_path)
    if not root.exists():
        raise ConfigError("source path does not exist", path=root, field="source_path",
                          fix="point source_path at a video folder or a list file")
    if cfg.source == "folder":
        return _folder_sources(root)
    if root.suffix == ".csv":
        return _table_sources(root)
    return _list_sources(root)


def _folder_sources(root: Path) -> list[dict]:
    if not root.is_dir():
        raise ConfigError("source 'folder' needs a directory", path=root, field="source_path")
    paths = list(find_videos(root).values())
    # Subject = first folder below the root (one folder per subject), else the video's own name.
    return [_probe(p, p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else p.stem) for p in paths]


def _list_sources(path: Path) -> list[dict]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    paths = [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines if ln and not ln.startswith("#")]
    if not paths:
        raise DataError("list file names no videos", path=path, fix="write one video path per line")
    for p in paths:
        if not p.is_file():
            raise DataError("video in the list file not found", path=p, field=str(path), fix="fix the list")
    return [_probe(p, p.parent.name or p.stem) for p in paths]


def _table_sources(path: Path) -> list[dict]:
    table = read_videos(path)
    return [{"subject": str(r.subject), "video": str(r.video), "path": str(r.path), "fps": float(r.fps),
             "num_frames": int(r.num_frames)} for r in table.itertuples()]


def _probe(path: Path, subject: str) -> dict:
    info = video_info(path)
    return {"subject": subject, "video": path.stem, "path": str(path), "fps": info["fps"],
            "num_frames": info["num_frames"]}


# ---- the plan --------------------------------------------------------------------------------------------

def clip_span(cfg: PackConfig) -> int:
    """Source frames one clip covers."""
    return (cfg.clip_frames - 1) * cfg.frame_step + 1


def stored_length(cfg: PackConfig, src: dict) -> int:
    """Frames clips are cut from: the source's, or its stabilised grid's."""
    if cfg.crop == "stabilised":
        return grid_length(src["num_frames"], src["fps"], cfg.stabilisation.rate_hz)
    return src["num_frames"]


def plan_shards(cfg: PackConfig, sources: list[dict]) -> list[list[tuple[int, int]]]:
    """Shards as lists of (source index, start frame); deterministic in (cfg, sources)."""
    span = clip_span(cfg)
    slots = [(i, start) for i, src in enumerate(sources)
             for start in range(0, stored_length(cfg, src) - span + 1, cfg.clip_stride)]
    return [slots[i:i + cfg.clips_per_shard] for i in range(0, len(slots), cfg.clips_per_shard)]


def plan_fingerprint(cfg: PackConfig, sources: list[dict]) -> str:
    content = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUNTIME_FIELDS}
    if cfg.crop != "stabilised":  # they change nothing then, and shard sets packed before they existed stay valid
        for name in _STABILISED_FIELDS:
            content.pop(name)
    return fingerprint({"config": content, "sources": [(s["path"], s["num_frames"]) for s in sources]})


def clip_key(source_index: int, source: dict, start: int) -> str:
    # WebDataset splits a member name at its first dot: keys must not contain one.
    video = re.sub(r"[^A-Za-z0-9_-]+", "_", source["video"])
    return f"{source_index:05d}_{video}_{start:06d}"


# ---- building one shard (runs in a pool worker) ----------------------------------------------------------

def center_box(height: int, width: int) -> tuple[int, int, int, int]:
    side = min(height, width)
    x0, y0 = (width - side) // 2, (height - side) // 2
    return x0, y0, x0 + side, y0 + side


def center_crop(frames: np.ndarray, size: int) -> tuple[np.ndarray, dict]:
    """Square centre crop resized to size x size; metadata with the crop box as the (assumed) face box."""
    import cv2

    x0, y0, x1, y1 = center_box(*frames.shape[1:3])
    out = np.stack([cv2.resize(f[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return out, {"crop": "center", "face_box": [x0, y0, x1, y1], "landmarks": None}


def face_crop(frames: np.ndarray, track, size: int) -> tuple[np.ndarray, dict]:
    """Landmark-aligned face crop (one similarity per clip, from the median landmarks) via data.faces.align."""

    crops, landmarks, _ = align_video(frames, track, size, reference="median")
    found = track.found
    return crops, {"crop": "face", "face_box": np.round(np.median(track.boxes[found], 0), 1).tolist(),
                   "landmarks": {"face_fraction": round(float(found.mean()), 4),
                                 "median_aligned": np.round(np.median(landmarks[found], 0), 1).tolist()}}


def _slice_track(track, start: int, stop: int, step: int):
    arrays = {name: getattr(track, name)[start:stop:step] for name in TRACK_ARRAYS}
    return dataclasses.replace(track, **arrays)


def _cut(cfg: PackConfig, frames: np.ndarray, track, offset: int, src: dict, start: int):
    """(crop, crop metadata) of the clip at `offset` in the decoded frames, or None when it has no face."""
    stop = offset + clip_span(cfg)
    clip = frames[offset:stop:cfg.frame_step]
    if track is None:
        return center_crop(clip, cfg.size)
    sub = _slice_track(track, offset, stop, cfg.frame_step)
    if not sub.found.any():
        log.warning("no face in %s frames %d..%d: clip left out", src["path"], start, start + clip_span(cfg) - 1)
        return None
    return face_crop(clip, sub, cfg.size)


def _clip_samples(cfg: PackConfig, sources: dict[int, dict], items: list[tuple[int, int]]):
    """Yield tar samples for the shard's clip slots, decoding (and face-tracking) each source's range once."""
    by_source: dict[int, list[int]] = {}
    for i, start in items:
        by_source.setdefault(i, []).append(start)
    for i, starts in by_source.items():
        src = sources[i]
        cuts = (stabilised_clips(cfg, src, starts, clip_span(cfg)) if cfg.crop == "stabilised"
                else _source_clips(cfg, src, starts))
        for start, crop, crop_meta, fps in cuts:
            key = clip_key(i, src, start)
            meta = {"key": key, "source": src["path"], "video": src["video"], "subject": src["subject"],
                    "start_frame": start, "frame_step": cfg.frame_step, "num_frames": len(crop),
                    "fps": fps, "source_fps": src["fps"], "size": cfg.size, **crop_meta}
            mp4 = encode_mp4(crop, meta["fps"], crf=cfg.crf, gop=cfg.gop, options=_x264_options(cfg))
            yield {"__key__": key, "mp4": mp4, "json": json.dumps(meta, sort_keys=True).encode()}


def _source_clips(cfg: PackConfig, src: dict, starts: list[int]):
    """(start, crop [T, S, S, 3], crop metadata, fps) of the clips of one source, its frame range decoded once."""
    first, last = min(starts), max(starts) + clip_span(cfg)
    frames = read_frames(src["path"], range(first, last))
    track = track_faces(frames) if cfg.crop == "face" else None
    for start in starts:
        cut = _cut(cfg, frames, track, start - first, src, start)
        if cut is not None:
            yield start, cut[0], cut[1], src["fps"] / cfg.frame_step


def _x264_options(cfg: PackConfig) -> dict:
    return {"tune": "fastdecode", "bf": 0} if cfg.fast_decode else {}


def build_shard(cfg: PackConfig, sources: dict[int, dict], index: int, items: list[tuple[int, int]]) -> dict:
    """Write shard `index` (atomically), then its done record; return the record."""
    import cv2

    cv2.setNumThreads(1)  # one pool process per core already
    record = write_shard(join(cfg.out_dir, shard_name(index)), _clip_samples(cfg, sources, items))
    record["sources"] = sorted({sources[i]["path"] for i, _ in items})
    write_done(cfg.out_dir, index, record)
    return record


# ---- the driver ------------------------------------------------------------------------------------------

def _start_manifest(cfg: PackConfig, sources: list[dict], plan: list, plan_id: str) -> dict:
    out = cfg.out_dir
    manifest = read_manifest(out)
    if manifest is not None and manifest["plan"] != plan_id:
        raise ConfigError(f"{out} holds shards packed with another config or other sources "
                          f"(plan {manifest['plan']}, now {plan_id}); shards are immutable",
                          path=join(out, MANIFEST), field="out_dir", fix="pack into a new out_dir")
    _refuse_strays(out, len(plan) if manifest is not None else 0)
    if manifest is None:
        manifest = {"format": FORMAT, "plan": plan_id, "config": dataclasses.asdict(cfg), "sources": sources,
                    "num_shards": len(plan), "num_clips": sum(len(s) for s in plan), "shards": {},
                    "complete": False}
        write_manifest(out, manifest)
    return manifest


def _refuse_strays(out, planned: int) -> None:
    """Shard files the manifest does not describe (none at all before a manifest exists) are someone else's
    shards: packing would overwrite some and leave the others beside a manifest that does not list them."""
    fs, root = filesystem(out)
    ours = {shard_name(i) for i in range(planned)}
    strays = sorted(name for name in (posixpath.basename(p) for p in fs.glob(f"{root}/shard-*.tar"))
                    if name not in ours)
    if strays:
        described = f"its manifest describes {planned} shard(s)" if planned else "it has no manifest.json"
        raise DataError(f"holds shard files that are not part of this shard set ({', '.join(strays[:3])}"
                        f"{', ...' if len(strays) > 3 else ''}; {described})", path=out, field="out_dir",
                        fix="pack into a new or empty out_dir, or move those files away")


def _remove_stale_temps(out, shards: int) -> None:
    """Temp files of this shard set's own writes (shards, done records, manifest) left by a run that was
    killed too hard to clean up (SIGKILL, a lost machine): nothing else writes them, so a rerun removes them.
    Object storage never holds such files: objects are staged locally and uploaded whole."""
    if is_url(out):
        return
    out = Path(out)
    targets = [out / shard_name(i) for i in range(shards)] + [done_path(out, i) for i in range(shards)]
    stale = [t for target in targets + [out / MANIFEST] for t in stale_temps(target)]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temp file(s) an interrupted run left in %s", len(stale), out)


def pack(cfg: PackConfig, progress: bool = True):
    """Pack the sources into shards under cfg.out_dir (a folder or a URL such as s3://bucket/prefix); resumes
    an interrupted run. Returns out_dir (a Path when local). The manifest is written complete last, after
    every shard: readers refuse an incomplete set (format.shard_urls)."""
    from tqdm import tqdm

    out = join(cfg.out_dir)
    sources = find_sources(cfg)
    plan = plan_shards(cfg, sources)
    if not plan:
        raise DataError(f"no source video is long enough for one clip of {clip_span(cfg)} frames",
                        path=cfg.source_path, fix="lower clip_frames / frame_step")
    manifest = _start_manifest(cfg, sources, plan, plan_fingerprint(cfg, sources))
    _remove_stale_temps(out, len(plan))
    records = {i: read_done(out, i) for i in range(len(plan))}
    todo = [i for i, record in records.items() if record is None]
    log.info("%d sources -> %d clips in %d shards; %d to build", len(sources), manifest["num_clips"],
             len(plan), len(todo))
    with tqdm(total=len(plan), initial=len(plan) - len(todo), desc="pack", unit="shard",
              disable=not progress) as bar:
        for i, record in _run(cfg, sources, plan, todo):
            # the record the worker wrote, as it returned it: reading it back here could see a listing of the
            # store this process cached before the pool wrote (an object store is not a local folder)
            records[i] = record
            bar.update(1)
    manifest["shards"] = {shard_name(i): records[i] for i in range(len(plan))}
    manifest["num_clips"] = sum(r["clips"] for r in manifest["shards"].values())  # less clips without a face
    manifest["num_bytes"] = sum(r["bytes"] for r in manifest["shards"].values())
    manifest["complete"] = True
    write_manifest(out, manifest)
    return out


def _sources_of(sources: list[dict], items: list[tuple[int, int]]) -> dict[int, dict]:
    """Only the sources a shard reads travel to its worker (the full list can be tens of MB)."""
    return {i: sources[i] for i, _ in items}


def _run(cfg: PackConfig, sources: list[dict], plan: list, todo: list[int]):
    """Yield (index, record) as shards finish; in-process when one worker (simpler to debug and profile)."""
    if cfg.workers == 1 or len(todo) <= 1:
        for i in todo:
            yield i, build_shard(cfg, _sources_of(sources, plan[i]), i, plan[i])
        return
    import multiprocessing

    # spawn: decord/x264/OpenCV threads in the parent must not be forked mid-flight. A terminated worker
    # removes its half-written shard (exit_on_sigterm).
    with ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=exit_on_sigterm) as pool:
        futures = {pool.submit(build_shard, cfg, _sources_of(sources, plan[i]), i, plan[i]): i for i in todo}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException as e:
            pool.shutdown(wait=False, cancel_futures=True)  # queued shards never start
            if isinstance(e, Terminated):  # Ctrl-C reaches the workers itself; a SIGTERM to us alone does not
                for worker in multiprocessing.active_children():
                    worker.terminate()
            raise
