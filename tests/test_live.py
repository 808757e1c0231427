"""Live spotting (spotting.live, `python -m spotting live`): a file played through live gives the intervals of
LOSO's causal code path; causal channels never read past their delay; a face lost for seconds, a source that
stops delivering, a URL that cannot be opened, a frame rate that changes, frames that arrive too fast, Ctrl-C."""
from __future__ import annotations

import http.server
import json
import signal
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_DETECTOR_OVERRIDES

from data.common.video_io import read_frames
from data.faces.face_video import FaceVideo
from data.common.errors import DataError
from spotting.baseline import BaselineConfig
from spotting.channels.causal import CausalChannels, CausalConfig, causal_channels
from spotting.live.decide import decide_video
from spotting.live.sources import FrameSource
from spotting.live.stream import LiveSpotter

LIVE = ["causal=true", "channels=[cues,flow]", "live.warmup_s=0", "live.window_s=8"]


@pytest.fixture(scope="module")
def causal_loso(tiny_spotting_set, tmp_path_factory, one_torch_thread_module):
    """LOSO in causal mode on the tiny set, with its final model: (config, shared inputs)."""
    from data.common.config import load_config
    from spotting.evaluation import loso

    out = tmp_path_factory.mktemp("causal_loso") / "loso"
    cfg = load_config("configs/spotting/loso.yaml", loso.LosoConfig, [
        f"finetune.data.root={tiny_spotting_set}", f"out={out}", "parallel=false", *LIVE, *TINY_DETECTOR_OVERRIDES])
    loso.run_loso(cfg)
    return cfg, loso.prepare(cfg, out)


@pytest.fixture(scope="module")
def one_torch_thread_module():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_live(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spotting", "live", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_a_file_played_live_gives_the_intervals_of_the_loso_code_path(causal_loso, tmp_path):
    from spotting import spotter as spotters
    from spotting.evaluation import loso
    from spotting.spot import spot

    cfg, shared = causal_loso
    model = Path(cfg.out) / "model"
    row = shared.videos.iloc[0]
    video = Path(cfg.finetune.data.root) / row.path
    item = loso.features_for(shared, [str(row.video)], None)[0]
    expected = [d.interval for d in decide_video(spotters.load(model).reader, item, item.face, cfg.live)]
    run = run_live(video, "--model", model, "--out", tmp_path / "live")
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [(r["onset"], r["offset"], r["type"]) for r in lines] == [(i.onset, i.offset, i.type) for i in expected]
    assert all(r["latency_s"] <= cfg.live.lookahead_s + cfg.live.hop_s + 1e-6 or r["decided_s"] >= 8.0
               for r in lines)  # decided within L + one hop of its offset, or at the end of the stream
    summary = json.loads((tmp_path / "live" / f"{video.stem}.json").read_text())
    assert summary["frames_read"] == row.num_frames and summary["frames_dropped"] == 0
    assert (tmp_path / "live" / f"{video.stem}_timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "live" / f"{video.stem}.csv").is_file()
    # `spot` with the causal spotter decides the same intervals
    spot(video, model, tmp_path / "spot")
    got = json.loads((tmp_path / "spot" / f"{video.stem}.json").read_text())["intervals"]
    assert [(i["onset"], i["offset"], i["type"]) for i in got] == sorted((i.onset, i.offset, i.type) for i in expected)


def test_causal_channels_never_read_past_their_delay(tiny_spotting_set):
    """The channels of frames before a cut are the same whether or not the video goes on after it."""
    path = tiny_spotting_set / "videos" / "s01_v01.mp4"
    full = FaceVideo(path, "full", 30.0)
    cut = 150
    head = FaceVideo(frames=full.frames[:cut], fps=30.0, name="head")
    cfg = CausalConfig()
    a, _ = causal_channels(full, BaselineConfig(), cfg)
    b, _ = causal_channels(head, BaselineConfig(), cfg)
    final = cut - CausalChannels(BaselineConfig(), 30.0, cfg).delay
    for channel in a:
        np.testing.assert_array_equal(a[channel][:final], b[channel][:final], err_msg=channel.name)
    # the check has teeth: at the cut itself the truncated stream's values differ (its pairs end there)
    assert any(not np.array_equal(a[c][final:cut], b[c][final:cut]) for c in a)


def test_a_face_lost_for_seconds_ends_its_segment_and_no_interval_spans_the_gap(causal_loso, tmp_path):
    cfg, shared = causal_loso
    model = Path(cfg.out) / "model"
    row = shared.videos.iloc[1]
    frames = read_frames(Path(cfg.finetune.data.root) / row.path)
    gap = slice(60, 150)  # 3 s without a face: the person turned away
    frames[gap] = np.random.default_rng(0).integers(90, 110, frames[gap].shape, dtype=np.uint8)
    spotter = LiveSpotter.from_folder(model)
    found = []
    for i, frame in enumerate(frames):
        found += spotter.push(frame, i / 30.0)
    found += spotter.finish()
    assert spotter.channels.aligner.segment == 1  # the face was found again, with a new reference
    lost = gap.start + round(cfg.live.lost_after_s * 30)  # a shorter miss is carried over (a blink of the tracker)
    for d in found:
        assert d.interval.offset < lost or d.interval.onset >= gap.stop, d
    channels, face = causal_channels(FaceVideo(frames=frames, fps=30.0, name="gap"), BaselineConfig(), cfg.live)
    assert not face[gap.start + 10:gap.stop - 10].any() and face[:gap.start].all() and face[gap.stop + 5:].all()
    after = np.stack([v[gap.stop + 30:] for v in channels.values()])
    assert after.max() > 0  # motion is measured again after the face came back


@pytest.fixture
def tracker_calls(monkeypatch):
    """How often the real tracker ran (each call still tracks)."""
    from data.faces.track import Tracker

    calls, step = [], Tracker.step
    monkeypatch.setattr(Tracker, "step", lambda self, frame: calls.append(1) or step(self, frame))
    return calls


def test_a_rate_that_changes_is_read_at_the_spotters_rate(causal_loso, tracker_calls):
    cfg, shared = causal_loso
    frames = read_frames(Path(cfg.finetune.data.root) / shared.videos.iloc[2].path)
    spotter = LiveSpotter.from_folder(Path(cfg.out) / "model")
    stamps = list(np.arange(90) / 30.0) + list(3.0 + np.arange(45) / 15.0)  # 3 s at 30 fps, then 3 s at 15 fps
    for frame, t in zip(frames, stamps):
        spotter.push(frame, float(t))
    assert spotter.stats.frames_in == 135 and spotter.stats.ticks == 90 + 89 and spotter.stats.repeated == 44
    assert spotter.stats.gaps == 0 and spotter.stats.unseen == 0
    assert len(tracker_calls) == 135  # a repeated frame's face is where it was: it is not tracked again


def test_a_silent_source_is_a_gap_without_tracking_and_the_face_is_found_again(causal_loso, tracker_calls):
    """A source silent for 2 s (or frames dropped by a spotter that fell behind): the ticks in between have no
    frame, cost no tracking, and end the face segment; the next frame starts a new one."""
    cfg, shared = causal_loso
    frames = read_frames(Path(cfg.finetune.data.root) / shared.videos.iloc[2].path)[:150]
    spotter = LiveSpotter.from_folder(Path(cfg.out) / "model")
    found = []
    for i, frame in enumerate(frames):
        found += spotter.push(frame, i / 30.0 + (2.0 if i >= 60 else 0.0))
    found += spotter.finish()
    assert spotter.stats.gaps == 1 and spotter.stats.unseen == 60 and spotter.stats.repeated == 0
    assert spotter.stats.ticks == 150 + 60 and len(tracker_calls) == 150
    assert spotter.channels.aligner.segment == 1
    for d in found:
        assert d.interval.offset < 60 or d.interval.onset >= 120, d


class StallingStream(http.server.BaseHTTPRequestHandler):
    """An MJPEG camera over HTTP that sends `frames` frames and then goes silent without closing."""
    frames = 12

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(self.frames):
            _, jpg = cv2.imencode(".jpg", np.full((120, 160, 3), 20 * i % 255, np.uint8))
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpg)).encode()
                             + b"\r\n\r\n" + jpg.tobytes() + b"\r\n")
            self.wfile.flush()
            time.sleep(0.02)
        time.sleep(6)

    def log_message(self, *args):
        pass


@pytest.fixture
def stalling_camera():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), StallingStream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    server.shutdown()


def test_a_camera_that_stops_delivering_ends_the_stream(stalling_camera):
    with FrameSource(stalling_camera, stall_s=1.0) as source:
        frames = list(source)
    assert len(frames) == StallingStream.frames and frames[0][0].shape == (120, 160, 3)
    assert source.stats.ended == "no frame for 1 s"
    assert all(b[1] > a[1] for a, b in zip(frames, frames[1:]))  # arrival timestamps


def test_a_url_that_cannot_be_opened_is_one_error_line(causal_loso):
    cfg, _ = causal_loso
    with socketserver.TCPServer(("127.0.0.1", 0), StallingStream) as closed:
        port = closed.server_address[1]  # a port nothing listens on once closed
    run = run_live(f"http://127.0.0.1:{port}/camera.mjpg", "--model", Path(cfg.out) / "model", timeout=120)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and len(errors) == 1 and "cannot open the video source" in errors[0]
    assert "Traceback" not in run.stderr
    with pytest.raises(DataError, match="no such video file"):
        FrameSource("missing.mp4")


def test_a_file_source_gives_the_frames_every_offline_stage_decodes(tiny_spotting_set):
    """Read from one open decoder a frame at a time (no chunked re-opening and seeking), the same pixels."""
    path = tiny_spotting_set / "videos" / "s01_v01.mp4"
    with FrameSource(path) as source:
        frames = list(source)
    assert np.array_equal(np.stack([f for f, _ in frames]), read_frames(path))
    assert [t for _, t in frames] == [i / source.fps for i in range(len(frames))]
    assert source.stats.ended == "end of file"


def test_frames_that_arrive_too_fast_are_dropped_and_counted(tiny_spotting_set):
    """A file played at its own rate into a queue of 2 that is read slowly: the reader never waits for room."""
    path = tiny_spotting_set / "videos" / "s02_v01.mp4"
    with FrameSource(path, realtime=True, queue_size=2) as source:
        taken = 0
        for _ in source:
            taken += 1
            time.sleep(0.1)  # a spotter 3x slower than the camera
    assert source.stats.read == 240 and source.stats.dropped > 100 and taken + source.stats.dropped == 240


def test_ctrl_c_decides_what_is_due_and_writes_everything(causal_loso, tmp_path):
    cfg, shared = causal_loso
    video = Path(cfg.finetune.data.root) / shared.videos.iloc[0].path
    proc = subprocess.Popen([sys.executable, "-m", "spotting", "live", str(video), "--model",
                             str(Path(cfg.out) / "model"), "--realtime", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = proc.stderr.readline()  # printed once the model is loaded and the source open
    assert started.startswith("live:"), started
    time.sleep(3)  # ~3 s of the 8 s video at its own rate
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads((tmp_path / f"{video.stem}.json").read_text())
    assert summary["ended"] == "interrupted" and 0 < summary["ticks"] < 240
    assert len(summary["intervals"]) == len([line for line in out.splitlines() if line.startswith("{")])
