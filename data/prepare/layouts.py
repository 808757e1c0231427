"""Where each dataset keeps its videos, and the ids its annotation file gives them.

A layout scans ROOT into SourceVideos: subject, video id, and the frames (a FrameFolder, or a video file).
The ids are the ones the dataset's annotation adapter writes (data.annotations), so both sides meet on them:
  casme2  rawpic/s15/15_0401girlcrashing/img1.jpg ...     subject s15, video 15_0401girlcrashing; 30 fps
  samm    SAMM_longvideos/006_1/006_1_0001.jpg ...        subject 006, video 006_1; 200 fps
  casme3  spNO.1/a/color/1.jpg ...                        subject spNO.1, video spNO.1_a; 30 fps
  folder  any tree of video files and/or frame folders    video = relative path with '/' as '__' (data faces'
          names), subject from the CSV; fps from the video file, or --fps for frame folders
ROOT may be the dataset folder or the frames folder inside it (rawpic, SAMM_longvideos).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Callable

from data.annotations import casme3
from data.common.errors import ConfigError, DataError
from data.common.frames import FrameFolder, frame_folder, is_image
from data.common.video_io import VIDEO_SUFFIXES, video_info, video_name


@dataclasses.dataclass(frozen=True)
class SourceVideo:
    subject: str | None  # None: not known from the layout (folder format: the annotations say)
    video: str
    source: FrameFolder | str  # frames, or the absolute path of a video file
    num_frames: int | None  # None: a video file not opened yet (probe)
    fps: float | None  # None: a video file's own, read by probe


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    fps: float | None  # the dataset's frame rate; None: from each video file, or --fps
    annotations: str  # the data.annotations format of its annotation file
    numbered: bool  # annotations count the numbers in the frame file names (not positions in the video)
    # (root, fps, a folder to leave out) -> videos; only the folder format can mistake output videos for input
    scan: Callable[[Path, float | None, Path | None], list[SourceVideo]]
    folder: str  # where a video's frames are, relative to ROOT ({subject}, {video}, {session})
    frame_name: str  # how the dataset names frame number {number} of {video}

    def frame_path(self, root, subject: str, video: str, number: int) -> Path:
        """Where the dataset keeps frame `number` of a video (what the scanner reads; tests write it)."""
        session = video[len(subject) + 1:]
        folder = self.folder.format(subject=subject, video=video, session=session)
        return Path(root) / folder / self.frame_name.format(video=video, number=number)


def _subdirs(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))


def _inside(root: Path, name: str) -> Path:
    """ROOT/name when the user gave the dataset folder instead of its frames folder (case-insensitive)."""
    for sub in _subdirs(root):
        if sub.name.lower() == name.lower():
            return sub
    return root


def _frames(subject: str | None, video: str, folder: Path, fps: float) -> SourceVideo | None:
    """The frame folder as a SourceVideo, or None when it holds no images (then it is no video)."""
    try:
        frames = frame_folder(folder, fps)
    except DataError:
        return None
    return SourceVideo(subject, video, frames, frames.num_frames, fps)


def scan_casme2(root: Path, fps: float, exclude: Path | None = None) -> list[SourceVideo]:
    base = _inside(root, "rawpic")
    found = []
    for subject in _subdirs(base):
        if re.fullmatch(r"s\d+", subject.name):
            found += [_frames(subject.name, folder.name, folder, fps) for folder in _subdirs(subject)]
    return [v for v in found if v is not None]


def scan_samm(root: Path, fps: float, exclude: Path | None = None) -> list[SourceVideo]:
    base = _inside(root, "SAMM_longvideos")
    found = [_frames(folder.name.split("_")[0], folder.name, folder, fps) for folder in _subdirs(base)
             if re.fullmatch(r"\d+_\d+", folder.name)]
    return [v for v in found if v is not None]


def scan_casme3(root: Path, fps: float, exclude: Path | None = None) -> list[SourceVideo]:
    found = []
    for subject in _subdirs(root):
        for session in _subdirs(subject):
            folder = casme3.frame_folder(root, subject.name, session.name)
            found.append(_frames(subject.name, casme3.video_id(subject.name, session.name), folder, fps))
    return [v for v in found if v is not None]


def scan_folder(root: Path, fps: float | None, exclude: Path | None = None) -> list[SourceVideo]:
    """Video files and frame folders anywhere under ROOT (ROOT itself may be one video or one frame folder);
    `exclude`: a folder not searched (the output folder inside ROOT)."""
    if root.is_file():
        return [_video_file(root.stem, root, fps)]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(folder, d).resolve() != exclude)
        folder = Path(folder)
        for name in sorted(f for f in files if Path(f).suffix.lower() in VIDEO_SUFFIXES):
            found.append(_video_file(video_name(folder / name, root), folder / name, fps))
        if any(is_image(f) for f in files):
            if fps is None:
                raise ConfigError("frame folders need a frame rate", path=folder, field="fps",
                                  fix="pass --fps (images do not store one)")
            found.append(_frames(None, video_name(folder, root) if folder != root else root.name, folder, fps))
    return [v for v in found if v is not None]


def _video_file(name: str, path: Path, fps: float | None) -> SourceVideo:
    return SourceVideo(None, name, str(path.resolve()), None, fps)


def probe(v: SourceVideo) -> SourceVideo:
    """A video file's frame count (and frame rate, unless given) from its container; frame folders as they are.
    Separate from scanning, so a broken file left out with --exclude is never opened."""
    if v.num_frames is not None:
        return v
    info = video_info(v.source)
    return dataclasses.replace(v, num_frames=info["num_frames"], fps=v.fps or info["fps"])


LAYOUTS = {
    "casme2": Layout("casme2", 30.0, "casme2", True, scan_casme2, "rawpic/{subject}/{video}", "img{number}.jpg"),
    "samm": Layout("samm", 200.0, "samm", True, scan_samm, "SAMM_longvideos/{video}", "{video}_{number:04d}.jpg"),
    "casme3": Layout("casme3", 30.0, "casme3", True, scan_casme3, "{subject}/{session}/color", "{number}.jpg"),
    "folder": Layout("folder", None, "csv", False, scan_folder, "{video}", "{number:06d}.jpg"),
}


def scan(layout: Layout, root, fps: float | None, exclude=None) -> list[SourceVideo]:
    """Every video of the dataset under `root` (not under `exclude`), sorted by id; none is an error."""
    root = Path(root).resolve()
    if not root.exists():
        raise DataError("no such folder", path=root, field="root", fix="pass the folder the dataset unpacked to")
    skip = Path(exclude).resolve() if exclude is not None else None
    videos = sorted(layout.scan(root, fps or layout.fps, skip), key=lambda v: v.video)
    if not videos:
        example = layout.frame_path("ROOT", "SUBJECT", "SUBJECT_VIDEO", 1)
        raise DataError(f"no {layout.name} videos found (expected {example})", path=root, field="root",
                        fix="point ROOT at the dataset folder, or pass the --format it is in")
    seen: dict[str, SourceVideo] = {}
    for v in videos:
        if v.video in seen:
            raise DataError(f"two videos share the id {v.video!r}", path=_where(v), field="video",
                            fix=f"rename one of them (the other is {_where(seen[v.video])})")
        seen[v.video] = v
    return videos


def _where(v: SourceVideo) -> str:
    return str(v.source.folder) if isinstance(v.source, FrameFolder) else v.source
