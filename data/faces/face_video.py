"""One video as every stage reads it: decoded once, its main face tracked once, both on first use.

`spotting spot`, LOSO's channel builder and `data pack` (stabilised clips) all need several things from the same
video: the flow cues (frames + per-frame landmarks), the stabilised stream (grid frames + landmarks), aligned
crops, the spotting heads' frames. A `FaceVideo` holds the decoded RGB frames and the face track, so each of
those derives from one decode and one track instead of decoding (and tracking) again. Nothing is decoded or
tracked until asked for: a stage whose outputs are all cached never touches the video.

Large frames are decoded at a working size (`max_short_side`): dlib, alignment and flow then run on a frame
whose face is still ~2x the 160 px crop, at a fraction of the cost (a 1920x1080 frame has 4x the pixels of its
960x540 working copy). Landmarks and boxes are in working-frame pixels; every consumer reads them with the
frames they came from. The frames stay in memory for the video's lifetime: ~0.7 MB per 640x360 frame.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.common.errors import DataError
from data.common.video_io import read_frames, video_info
from data.faces.track import FaceTrack, load_track, save_track, track_faces

log = logging.getLogger(__name__)

MAX_SHORT_SIDE = 540  # frames with a longer short side are decoded scaled down to it
DECODE_CHUNK = 256  # frames per decode call (progress, and no second full-size copy in memory)


def working_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    """(width, height) frames are decoded at: scaled so the short side is at most `max_short_side`."""
    short = min(width, height)
    if not max_short_side or short <= max_short_side:
        return width, height
    scale = max_short_side / short
    return int(round(width * scale)) // 2 * 2, int(round(height * scale)) // 2 * 2


class FaceVideo:
    """A video file (or frames already in memory) with its face track; `frames` and `track` are computed on first
    use. `track_cache`: a .npz where the track is kept between runs (reused when it holds as many frames)."""

    def __init__(self, path=None, name: str | None = None, fps: float | None = None, *, frames=None,
                 track_cache=None, detect_every: int = 10, max_short_side: int | None = MAX_SHORT_SIDE,
                 progress: bool = False):
        if path is None and frames is None:
            raise DataError("a FaceVideo needs a video path or frames", field="path", fix="pass one of them")
        self.path = Path(path) if path is not None else None
        self.name = name or (self.path.stem if self.path is not None else "<frames>")
        self.track_cache = Path(track_cache) if track_cache is not None else None
        self.detect_every, self.max_short_side, self.progress = detect_every, max_short_side, progress
        if frames is not None:
            self.__dict__["frames"] = np.asarray(frames)
        self._fps = fps

    @functools.cached_property
    def info(self) -> dict:
        """num_frames, fps, height, width (of the source: the file's header, or the frames given)."""
        if self.path is None:
            t, h, w = self.frames.shape[:3]
            return {"num_frames": t, "fps": float(self._fps or 0.0), "height": h, "width": w}
        return video_info(self.path)

    @property
    def fps(self) -> float:
        return float(self._fps) if self._fps else self.info["fps"]

    @property
    def num_frames(self) -> int:
        return int(self.info["num_frames"])

    @property
    def where(self):
        """What names this video in messages: its path, else its name."""
        return self.path or self.name

    @functools.cached_property
    def frames(self) -> np.ndarray:
        """RGB uint8 [T, H, W, 3] at the working size, decoded in chunks."""
        total, w, h = self.num_frames, self.info["width"], self.info["height"]
        size = working_size(w, h, self.max_short_side)
        if size != (w, h):
            log.info("%s: %dx%d frames decoded at %dx%d", self.name, w, h, *size)
        dw, dh = (-1, -1) if size == (w, h) else size
        parts = []
        with tqdm(total=total, desc=f"decode {self.name}", unit="frame", disable=not self.progress,
                  leave=False) as bar:
            for start in range(0, total, DECODE_CHUNK):
                stop = min(total, start + DECODE_CHUNK)
                try:
                    parts.append(read_frames(self.path, range(start, stop), width=dw, height=dh))
                except DataError:
                    raise
                except Exception as e:  # decord errors on a stream corrupt past its header
                    raise DataError(f"cannot decode frames {start}..{stop - 1} ({type(e).__name__})",
                                    path=self.path, fix="re-encode the video") from None
                bar.update(stop - start)
        return np.concatenate(parts)

    @functools.cached_property
    def track(self) -> FaceTrack:
        """The main face through every frame (data.faces.track), from `track_cache` when it holds this video's."""
        cached = self._cached_track()
        if cached is not None:
            return cached
        track = track_faces(self.frames, detect_every=self.detect_every, progress=self.progress, name=self.name)
        track.source = str(self.where)
        if self.track_cache is not None:
            save_track(self.track_cache, track)
        return track

    def _cached_track(self) -> FaceTrack | None:
        if self.track_cache is None or not self.track_cache.is_file():
            return None
        try:
            track, _ = load_track(self.track_cache)
        except DataError as e:
            log.warning("re-tracking %s: %s", self.name, e)
            return None
        size = working_size(self.info["width"], self.info["height"], self.max_short_side)
        if track.num_frames != self.num_frames or tuple(track.frame_size) != size:
            log.warning("re-tracking %s: cached track %s has %d frames of %dx%d", self.name, self.track_cache,
                        track.num_frames, *track.frame_size)
            return None
        return track

    def release(self) -> None:
        """Drop the decoded frames (the track stays): a caller walking many videos holds one at a time."""
        self.__dict__.pop("frames", None)
