"""Video in and out: H.264 encoding with PyAV (opencv's wheel has no encoder), decoding with decord."""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from data.common.atomic import atomic_path
from data.common.errors import DataError


# The same frames must give the same bytes on any machine (issue 29). Measured here (PyAV 18.1, x264 build 165, an
# AVX-512 CPU): x264's output depends on its thread count, whose default follows the CPUs the process may use
# (a clip under `taskset -c 0` and under 2 cores: two files), and on the SIMD code it picks for the CPU (plain C
# and SSE2, SSE4.2 to AVX2, and AVX-512 gave three different files of one clip at one thread; the AVX-512 code
# also gave 2 different files in 12 encodes of the same frames in one process). One thread and x264's C code
# (asm=0) gave one file everywhere, at about 3x the CPU time per frame (colour conversion included: 160x160
# 1.55 ms instead of 0.55 ms, 640x360 13 ms instead of 3.7 ms). The RGB -> YUV 4:2:0 conversion before it
# (swscale, one thread) gave the same planes with its SSE2, AVX2 and AVX-512 code (forced through
# av_force_cpu_flags), so it is the same on any x86-64 CPU.
ENCODER_THREADS = 1
X264_PORTABLE = {"x264-params": "asm=0"}


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 18, codec: str = "libx264",
               gop: int | None = None, options: dict | None = None) -> bytes:
    """Encode RGB uint8 frames [T, H, W, 3] to mp4 bytes (H.264 yuv420p; even H and W required), the same bytes
    for the same frames on any machine (ENCODER_THREADS, X264_PORTABLE).

    options: extra encoder options, e.g. {"tune": "fastdecode", "bf": "0"} (cheaper to decode, a bit larger).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if t == 0 or h % 2 or w % 2:
        raise ValueError(f"need >= 1 frame and even height/width for yuv420p, got {frames.shape}")
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # the encoder's threads and PyAV's colour conversion (it passes this count to swscale)
        stream.codec_context.thread_count = ENCODER_THREADS
        opts = {"crf": str(crf), "preset": "veryfast", **X264_PORTABLE} if codec == "libx264" else {}
        for key, value in (options or {}).items():
            joined = key == "x264-params" and key in opts  # x264's own settings: one colon-separated list
            opts[key] = f"{opts[key]}:{value}" if joined else str(value)
        if gop:
            stream.codec_context.gop_size = gop
        stream.options = opts
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def write_mp4(path, frames: np.ndarray, fps: float, **kwargs) -> Path:
    """Encode and write atomically."""
    data = encode_mp4(frames, fps, **kwargs)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def _native_stderr(captured: list[str]):
    """Collect what native code (FFmpeg, decord's C++ logging) writes to file descriptor 2 inside the block:
    those lines ("moov atom not found", "ERROR opening: ...") would print before, and bury, the one `error:`
    line. The text is appended to `captured` so the error can quote the decoder's reason."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def _decoder_reason(err: Exception, log_text: str) -> str:
    """One line on why the decoder refused a file, e.g. 'Invalid data found when processing input'."""
    found = re.search(r"ERROR opening: .*?, ([^\n]+)", log_text)
    text = found.group(1).strip() if found else f"{type(err).__name__}: {' '.join(str(err).split())}"
    return text[:160]


def _reader(source, width: int = -1, height: int = -1):
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # FFmpeg's own log lines
    name = source if isinstance(source, (str, Path)) else "<bytes>"
    fix = "check that the file is a whole video: copy or export it again"
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise DataError("video not found", path=source, fix="check the path")
        if Path(source).stat().st_size == 0:
            raise DataError("not a decodable video (the file is empty: 0 bytes)", path=source, fix=fix)
        arg = str(source)
    else:
        arg = io.BytesIO(bytes(source))
    log_text: list[str] = []
    try:
        with _native_stderr(log_text):
            vr = decord.VideoReader(arg, ctx=decord.cpu(0), width=width, height=height, num_threads=1)
    except Exception as e:  # decord raises its own DECORDError / RuntimeError for undecodable input
        raise DataError(f"not a decodable video ({_decoder_reason(e, ''.join(log_text))})", path=name,
                        fix=fix) from None
    if len(vr) == 0:
        raise DataError("video has zero frames", path=name, fix="re-export the video")
    return vr


def video_info(source) -> dict:
    """num_frames, fps, height, width of a file path or mp4 bytes."""
    vr = _reader(source)
    h, w = vr[0].shape[:2]
    return {"num_frames": len(vr), "fps": float(vr.get_avg_fps()), "height": int(h), "width": int(w)}


def read_frames(source, indices=None, width: int = -1, height: int = -1) -> np.ndarray:
    """Decode RGB uint8 frames [T, H, W, 3] (all frames, or `indices`) from a path or mp4 bytes."""
    vr = _reader(source, width, height)
    if indices is None:
        indices = range(len(vr))
    indices = list(indices)
    if indices and (min(indices) < 0 or max(indices) >= len(vr)):
        raise DataError(f"frame indices {min(indices)}..{max(indices)} outside 0..{len(vr) - 1}",
                        path=source if isinstance(source, (str, Path)) else "<bytes>")
    return vr.get_batch(indices).asnumpy()


def iter_frames(source):
    """RGB uint8 frames [H, W, 3] one at a time, in order, from one open reader: a stream's memory stays one
    frame, and nothing is decoded twice (each `read_frames` call opens the file and seeks from a key frame)."""
    vr = _reader(source)
    for _ in range(len(vr)):
        yield vr.next().asnumpy()


# Every suffix the readers (decord, PyAV) open; folder searches of every stage use this one list.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def video_name(path: Path, root: Path) -> str:
    """A video's name inside a searched folder: its relative path without the video suffix, folders joined by
    '__', so sub1/clip.mp4 and sub2/clip.mp4 get different names (and different output files). A frame folder
    (data.common.frames) is named the same way: sub1/take2/ -> sub1__take2."""
    relative = Path(path).relative_to(root)
    if relative.suffix.lower() in VIDEO_SUFFIXES:
        relative = relative.with_suffix("")
    return str(relative).replace("/", "__").replace("\\", "__")


def find_videos(source, exclude=None) -> dict[str, Path]:
    """NAME -> path for one video file, or for every video under a folder (searched recursively, sorted).

    A single file is named by its stem. `exclude`: a folder whose contents are skipped (a command's own output
    folder inside its input folder).
    """
    source = Path(source)
    if source.is_file():
        return {source.stem: source}
    if not source.is_dir():
        raise DataError("no such file or folder", path=source, field="input", fix="pass a video file or a folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    videos: dict[str, Path] = {}
    for path in sorted(source.rglob("*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        if skip is not None and skip in path.resolve().parents:
            continue
        name = video_name(path, source)
        if name in videos:
            raise DataError(f"two videos share the output name {name!r}: {videos[name]} and {path}", path=path,
                            field="input", fix="rename one of them")
        videos[name] = path
    if not videos:
        raise DataError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in folder", path=source, field="input",
                        fix="pass a video or a folder that contains videos")
    return videos
