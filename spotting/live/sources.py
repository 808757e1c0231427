"""Where live frames come from: a camera index, a network stream (RTSP/HTTP URL) or a file, read in a thread
into a bounded queue.

A source that delivers faster than the spotter processes never queues without bound: when the queue is full the
newest frame is dropped and counted (a camera or a URL, and a file read with `realtime`: they run on their own
clock). A file read as fast as it decodes waits for room instead: nothing is dropped. A source that delivers
nothing for `stall_s` seconds ends the stream (a camera unplugged, a stream that stopped), with the reason.
Timestamps: a file's own (frame index / its fps); a camera's or a URL's, the arrival time. Files are decoded by
decord, as every offline stage decodes them (data.common.video_io), so a file gives live spotting the frames
LOSO saw; cameras and URLs through OpenCV's capture.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from pathlib import Path

import cv2

from data.common.errors import DataError
from data.common.video_io import iter_frames, video_info

END = object()  # the reader's last queue item


@dataclasses.dataclass
class SourceStats:
    read: int = 0
    dropped: int = 0
    ended: str = ""  # why the stream ended


class FrameSource:
    """Frames of SOURCE (a camera index as text or int, a URL, or a video file) as (RGB frame, timestamp)."""

    def __init__(self, source, realtime: bool = False, queue_size: int = 8, stall_s: float = 5.0):
        self.name = str(source)
        self.is_file = not self.name.isdigit() and "://" not in self.name
        if self.is_file and not Path(self.name).is_file():
            raise DataError("no such video file", path=self.name, field="source",
                            fix="pass a video file, a camera index (0) or a stream URL (rtsp://..., http://...)")
        if self.is_file:
            info = video_info(self.name)  # a file that does not decode: one DataError naming it
            self.capture, self.fps = None, info["fps"]
        else:
            self.capture = cv2.VideoCapture(int(self.name) if self.name.isdigit() else self.name)
            if not self.capture.isOpened():
                raise DataError("cannot open the video source", path=self.name, field="source",
                                fix="check the camera index, or the URL and that its stream is up")
            self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
        self.paced = realtime or not self.is_file  # on its own clock: frames that find the queue full are dropped
        self.realtime = realtime
        self.stall_s = stall_s
        self.frames: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stats = SourceStats()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, name=f"source {self.name}", daemon=True)

    def __enter__(self) -> FrameSource:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        # the reader thread releases the capture itself: releasing it under a read blocked on a stalled
        # stream crashes OpenCV; a thread still blocked there is a daemon and ends with the process
        self.thread.join(timeout=2.0)

    def __iter__(self):
        """(RGB uint8 frame, timestamp s) until the source ends."""
        while True:
            try:
                item = self.frames.get(timeout=self.stall_s)
            except queue.Empty:
                self.stats.ended = f"no frame for {self.stall_s:g} s"
                return
            if item is END:
                return
            yield item

    def _decoded(self):
        """RGB frames as they are decoded."""
        if self.is_file:
            yield from iter_frames(self.name)
            self.stats.ended = "end of file"
            return
        while True:
            ok, bgr = self.capture.read()
            if not ok:
                self.stats.ended = "the source stopped delivering frames"
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _read(self) -> None:
        start = time.monotonic()
        try:
            for index, frame in enumerate(self._decoded()):
                if self.stop.is_set():
                    break
                stamp = index / self.fps if self.is_file else time.monotonic() - start
                if self.realtime and self.is_file:  # play the file at its own rate
                    time.sleep(max(0.0, start + stamp - time.monotonic()))
                self.stats.read += 1
                self._put((frame, stamp))
        except Exception as e:  # a stream that breaks mid-way ends it, with the reason
            self.stats.ended = f"{type(e).__name__}: {e}"
        finally:
            if self.capture is not None:
                self.capture.release()
        self._put(END, always=True)

    def _put(self, item, always: bool = False) -> None:
        if not self.paced or always:
            while not self.stop.is_set():
                try:
                    self.frames.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue
            return
        try:
            self.frames.put_nowait(item)
        except queue.Full:
            self.stats.dropped += 1
