"""Frame folders: the published spotting datasets ship each long video as a folder of numbered images
(CAS(ME)^2 `img1.jpg`, SAMM-LV `006_1_0001.jpg`, CAS(ME)^3 `1.jpg`), not as a video file.

A FrameFolder is such a video: its image files in display order (natural order of the names, so img10 follows
img9), the frame number each name carries, and the frame rate (which images do not store). It decodes in small
chunks (a full-HD frame is 6.7 MB decoded) and refuses frames whose size differs from the first one.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from data.common.errors import DataError

# Every suffix the frame reader (OpenCV) opens; folder searches use this one list.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Decoded frames per chunk: bounds memory at full HD (16 x 6.7 MB) while a chunk still amortises the call.
CHUNK_FRAMES = 16

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: img2 < img10, 006_1_0009 < 006_1_0010."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name))


def frame_number(path) -> int | None:
    """The frame number a file name carries: its last run of digits (img12.jpg -> 12, 006_1_0001.jpg -> 1)."""
    runs = _DIGITS.findall(Path(path).stem)
    return int(runs[-1]) if runs else None


def is_image(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def image_files(folder) -> list[Path]:
    """The images directly inside `folder`, in natural order (hidden files left out)."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if not e.name.startswith(".") and is_image(e.name) and e.is_file()]
    return [Path(folder) / name for name in sorted(names, key=natural_key)]


@dataclasses.dataclass(frozen=True)
class FrameFolder:
    """One video stored as image files; `files` are absolute paths in display order (Ray tasks on other nodes
    open them from a shared filesystem)."""

    files: tuple[str, ...]
    fps: float

    @property
    def folder(self) -> Path:
        return Path(self.files[0]).parent

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def numbers(self) -> np.ndarray | None:
        """The frame number of every file, or None when some name carries none (then there is no numbering)."""
        numbers = [frame_number(f) for f in self.files]
        return None if any(n is None for n in numbers) else np.asarray(numbers, np.int64)

    def gaps(self) -> list[tuple[int, int]]:
        """Missing frame numbers as inclusive (first, last) ranges between the first and the last file."""
        numbers = self.numbers()
        if numbers is None:
            return []
        jumps = np.flatnonzero(np.diff(numbers) > 1)
        return [(int(numbers[i]) + 1, int(numbers[i + 1]) - 1) for i in jumps]

    def nbytes(self) -> int:
        return sum(os.stat(f).st_size for f in self.files)

    def chunks(self, size: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
        """RGB uint8 frames [n, H, W, 3], `size` at a time; a frame of another size than the first is an error."""
        shape = None
        for start in range(0, self.num_frames, size):
            frames = [read_image(f) for f in self.files[start:start + size]]
            for path, frame in zip(self.files[start:start + size], frames):
                shape = shape or frame.shape
                if frame.shape != shape:
                    raise DataError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the video's first frame "
                                    f"{shape[1]}x{shape[0]}", path=path, field="frame size",
                                    fix="re-extract the frame at the video's size, or remove the video")
            yield np.stack(frames)


def frame_folder(folder, fps: float) -> FrameFolder:
    """The images in `folder` as one video at `fps` frames per second."""
    files = image_files(Path(folder).resolve())  # resolved once, not per frame (~7,000 per SAMM-LV video)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder", path=folder, field="frames",
                        fix="point at the folder that holds the video's frames")
    return FrameFolder(tuple(map(str, files)), float(fps))


def read_image(path) -> np.ndarray:
    """One image as RGB uint8 [H, W, 3]."""
    import cv2

    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise DataError("not a readable image", path=path, field="frames",
                        fix="re-extract this frame from the dataset archive, or delete it")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
