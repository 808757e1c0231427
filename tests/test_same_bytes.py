"""Same input, same bytes on any machine (issue 29): every command that encodes H.264 (`data synth`, the aligned
faces of `data prepare`, the shards of `data pack`, the aligned video of `spotting spot`) writes identical files
when it may use one core and when it may use two. Each command runs as a subprocess whose CPU affinity is set
before it starts (x264's default thread count follows it). Decoding is checked too."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORES = sorted(os.sched_getaffinity(0))
AFFINITIES = {"1 core": CORES[:1], "2 cores": CORES[:2]}
# 2 videos x 5 s at 10 fps (50 frames), one event of each type: about the shortest set the generator's rules allow
SYNTH = ["subjects=1", "videos_per_subject=2", "duration_s=5", "fps=10", "events.macro_per_video=[1,1]",
         "events.micro_per_video=[1,1]", "events.macro_duration_s=[0.6,1.0]", "events.micro_duration_s=[0.3,0.5]"]

pytestmark = pytest.mark.skipif(len(CORES) < 2, reason="needs two cores to compare one core with two")


def run_on(cores: list[int], *argv) -> subprocess.CompletedProcess:
    """`python -m ARGV` allowed to run on `cores` only (set in the child before it starts Python)."""
    proc = subprocess.run([sys.executable, "-m", *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def digests(folder: Path, pattern: str) -> dict[str, str]:
    found = {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
             for p in sorted(folder.glob(pattern)) if p.is_file()}
    assert found, f"nothing matches {pattern} in {folder}"
    return found


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    """The tiny synthetic set generated under each affinity."""
    out = {}
    for name, cores in AFFINITIES.items():
        folder = tmp_path_factory.mktemp("synth") / name.replace(" ", "_")
        run_on(cores, "data", "synth", "--out", folder, "--no-progress", *SYNTH)
        out[name] = folder
    return out


@pytest.fixture(scope="module")
def spotter(tmp_path_factory) -> Path:
    """An untrained spotter that reads the flow cues only (spot aligns the face, computes the cues, writes the
    aligned video; no encoder windows to wait for)."""
    from finetune.encoder.load import load_encoder
    from finetune.heads.config import FinetuneConfig
    from finetune.heads.train import build_heads
    from finetune.store import save_spotter
    from spotting.baseline import BaselineConfig
    from spotting.channels.encoder import EncoderChannelsConfig
    from spotting.channels.vocabulary import CUES, Channel
    from spotting.logistic import LogisticConfig, LogisticReader, TypeFit
    from spotting.spotter import save_channels

    folder = tmp_path_factory.mktemp("cues_spotter")
    types = {kind: TypeFit([Channel(CUES, kind, "all", "motion")], [0.0], [1.0], [1.0], -2.0)
             for kind in ("macro", "micro")}
    LogisticReader(LogisticConfig(), types).save(folder)
    save_channels(folder, (CUES,), BaselineConfig(), EncoderChannelsConfig())
    cfg = FinetuneConfig()
    save_spotter(build_heads(load_encoder(None, cfg.model.name), cfg), cfg, folder)
    return folder


def test_synth_writes_the_same_files_on_one_core_and_on_two(synth):
    one, two = (digests(synth[name], "**/*") for name in AFFINITIES)
    assert any(name.endswith(".mp4") for name in one)
    assert one == two


@pytest.mark.parametrize("command", ["prepare", "pack", "spot"])
def test_every_encoding_command_writes_the_same_video_on_one_core_and_on_two(synth, spotter, tmp_path, command):
    outputs = {}
    for name, cores in AFFINITIES.items():
        videos = synth["1 core"]  # the same input for both: only the cores differ
        out = tmp_path / name.replace(" ", "_")
        if command == "prepare":
            run_on(cores, "data", "prepare", videos / "videos", "--format", "folder", "--out", out,
                   "--workers", "1", "--no-progress")
            outputs[name] = digests(out, "faces/*_aligned.mp4")
        elif command == "pack":
            run_on(cores, "data", "pack", "--config", "configs/data/pack_synthetic.yaml", "--no-progress",
                   f"source_path={videos / 'videos.csv'}", f"out_dir={out}", "clip_frames=16", "clip_stride=16",
                   "clips_per_shard=4", "workers=2")
            outputs[name] = digests(out, "*.tar")
        else:
            run_on(cores, "spotting", "spot", videos / "videos" / "s01_v01.mp4", "--model", spotter, "--out", out)
            outputs[name] = digests(out, "*_aligned.mp4")
    assert outputs["1 core"] == outputs["2 cores"]


def test_decoding_gives_the_same_frames_on_one_core_and_on_two(synth):
    """decord at full size and at a working size (data.faces.face_video), in a fresh process per affinity."""
    video = synth["1 core"] / "videos" / "s01_v01.mp4"
    code = ("import hashlib, sys; from data.common.video_io import read_frames; "
            "print(hashlib.md5(read_frames(sys.argv[1]).tobytes() + "
            "read_frames(sys.argv[1], width=96, height=96).tobytes()).hexdigest())")
    seen = {name: subprocess.run([sys.executable, "-c", code, str(video)], cwd=REPO, capture_output=True, text=True,
                                 timeout=120, preexec_fn=lambda c=cores: os.sched_setaffinity(0, c)).stdout
            for name, cores in AFFINITIES.items()}
    assert len(seen["1 core"]) == 33 and seen["1 core"] == seen["2 cores"]



def test_the_same_frames_encode_to_the_same_bytes_again_and_again_in_one_process():
    """x264's AVX-512 code gave 2 different files in 12 encodes of such frames in one process (issue 29)."""
    import cv2
    import numpy as np

    from data.common.video_io import encode_mp4

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), (9, 9), 3)
    frames = np.stack([np.roll(base[i // 4:i // 4 + 240, :320], 2 * i, 1) for i in range(60)])
    kept = []  # allocations between encodes move the encoder's buffers, as a long job's do
    found = set()
    for _ in range(12):
        kept.append(bytes(int(rng.integers(1, 3_000_000))))
        if len(kept) > 5:
            kept.pop(int(rng.integers(len(kept))))
        found.add(hashlib.md5(encode_mp4(frames, 30.0)).hexdigest())
    assert len(found) == 1
