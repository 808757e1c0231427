"""The face work of `data prepare`: one Ray task per video, progress over videos and frames.

Each task runs data.faces.results.process_video (the code `python -m data faces` runs) on one video and writes its
result set atomically into the output folder, the summary last; a task that finds bad input returns the error
instead of raising, so one bad video never stops the others. Paths are absolute, so tasks on other nodes read
and write the same files when ROOT and OUT are on a shared filesystem.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from data.common.errors import SpotMAEError
from data.common.ray_session import ray_session
from data.faces.results import FacesConfig, process_video
from data.prepare.layouts import SourceVideo

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the driver reads the frame counter while it waits for videos


def prepare_video(video: SourceVideo, out: str, cfg: FacesConfig, counter=None) -> dict:
    """One video's face result set in `out`; returns its summary (+ the task's CPU seconds), or
    {"status": "failed", "error": ...}."""
    import cv2

    cv2.setNumThreads(1)  # one core per task: the tasks are the parallelism
    on_frames = None if counter is None else (lambda n: counter.add.remote(n))
    start = time.process_time()
    try:
        summary = process_video(video.source, video.video, Path(out), cfg, progress=False, on_frames=on_frames)
    except SpotMAEError as e:
        return {"status": "failed", "error": str(e), "name": video.video}
    return {**summary, "task_cpu_s": round(time.process_time() - start, 3)}


def _frame_counter():
    import ray

    @ray.remote(num_cpus=0)
    class FrameCounter:
        """Frames tracked so far, summed over every task (tasks add, the driver reads)."""

        def __init__(self):
            self.frames = 0

        def add(self, n: int) -> None:
            self.frames += n

        def total(self) -> int:
            return self.frames

    return FrameCounter.remote()


def run_videos(videos: list[SourceVideo], out: Path, cfg: FacesConfig, address: str | None,
               workers: int | None, progress: bool = True) -> dict[str, dict]:
    """{video: summary} for every video, processed as Ray tasks (one CPU each) on `address` (None: local)."""
    import ray
    from tqdm import tqdm

    if not videos:
        return {}
    with ray_session(address, workers):
        counter = _frame_counter()
        task = ray.remote(num_cpus=1)(prepare_video)
        pending = {task.remote(v, str(out), cfg, counter): v for v in videos}
        log.info("%d videos as Ray tasks on %s CPUs", len(videos), int(ray.cluster_resources().get("CPU", 0)))
        results = {}
        frames = tqdm(total=sum(v.num_frames for v in videos), desc="frames", unit="frame", disable=not progress,
                      position=1, smoothing=0.1)
        with tqdm(total=len(videos), desc="videos", unit="video", disable=not progress, position=0) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in done:
                    video = pending.pop(ref)
                    results[video.video] = ray.get(ref)
                    bar.update(1)
                frames.update(ray.get(counter.total.remote()) - frames.n)
        frames.close()
    return results
