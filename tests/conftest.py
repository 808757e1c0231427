"""Shared pytest fixtures. Add new fixtures below; keep existing ones unchanged."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")


# --- face clips with known expression events (added for tests/test_flow.py, tests/test_baseline.py) ---
import functools  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@functools.lru_cache(maxsize=1)
def _aligned_face():
    """skimage's astronaut warped onto the canonical 160x160 face, and its landmarks there."""
    import cv2
    from skimage import data as skdata

    from data.faces import landmarks as lmk

    image = skdata.astronaut()
    matrix = lmk.similarity_to_canonical(lmk.face_landmarks(image))
    crop = cv2.warpAffine(image, matrix, (160, 160), flags=cv2.INTER_LINEAR)
    return crop, lmk.face_landmarks(crop)


def _event_field(points, amplitude, direction, sigma, size=160):
    """Displacement [H, W, 2]: Gaussian bumps at `points`, each moving along its `direction` by `amplitude` px."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    field = np.zeros((size, size, 2), np.float32)
    for (px, py), (dx, dy) in zip(points, direction):
        bump = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma ** 2))
        field[..., 0] += amplitude * dx * bump
        field[..., 1] += amplitude * dy * bump
    return field


def _region_motion(landmarks, region):
    """Anchor points and unit directions of a stereotyped action: smile (mouth corners out/up) or brow raise."""
    if region == "mouth":
        return [landmarks[48], landmarks[54]], [(-0.7, -0.7), (0.7, -0.7)]
    if region == "brows":
        return [landmarks[19], landmarks[24]], [(0.0, -1.0), (0.0, -1.0)]
    raise ValueError(region)


@pytest.fixture(scope="session")
def face_clip_factory():
    """make(path, num_frames, events=[(onset, offset, region, amplitude_px)], fps=30, head=(dx, dy) per frame,
    noise=std) -> path: an aligned-face H.264 clip whose events follow a raised-cosine onset-apex-offset."""
    import cv2

    from data.common.video_io import write_mp4

    face, landmarks = _aligned_face()
    yy, xx = np.mgrid[0:160, 0:160].astype(np.float32)

    def make(path, num_frames, events=(), fps=30.0, head=(0.0, 0.0), noise=0.0, seed=0):
        rng = np.random.default_rng(seed)
        fields = [_event_field(*_region_motion(landmarks, region)[:1], amplitude,
                               _region_motion(landmarks, region)[1], sigma=9.0)
                  for _, _, region, amplitude in events]
        frames = []
        for t in range(num_frames):
            disp = np.zeros((160, 160, 2), np.float32)
            for (onset, offset, _, _), field in zip(events, fields):
                if onset <= t <= offset:
                    phase = (t - onset) / max(1, offset - onset)
                    disp += field * 0.5 * (1 - np.cos(2 * np.pi * phase))
            map_x = xx - disp[..., 0] - head[0] * t
            map_y = yy - disp[..., 1] - head[1] * t
            frame = cv2.remap(face, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            if noise:
                frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
            frames.append(frame)
        return write_mp4(path, np.stack(frames), fps)

    return make


@pytest.fixture(scope="session")
def aligned_face_landmarks():
    """68 landmarks of the aligned test face (the one face_clip_factory animates)."""
    return _aligned_face()[1]


# --- the real carphone face video, decoded and tracked once per session (added for tests/test_faces.py) ---
@pytest.fixture(scope="session")
def carphone_frames():
    """All 120 RGB frames [120, 144, 176, 3] of carphone_pristine.mp4."""
    from data.common.assets import carphone_video
    from data.common.video_io import read_frames

    return read_frames(carphone_video())


@pytest.fixture(scope="session")
def carphone_track(carphone_frames):
    """data.faces.track.track_faces on the carphone frames with default settings (~0.5 s)."""
    from data.faces.track import track_faces

    return track_faces(carphone_frames)


# --- intensity-ramp videos and their shards (added for tests/test_pack.py, tests/test_loader.py) ---
RAMP_BASE, RAMP_STEP = 40, 2  # frame t of a ramp video is uniformly grey at RAMP_BASE + RAMP_STEP * t


def ramp_value(frame_index):
    return RAMP_BASE + RAMP_STEP * np.asarray(frame_index)


@pytest.fixture(scope="session")
def ramp_videos(tmp_path_factory):
    """A folder of 4 H.264 videos (2 subject sub-folders x 2), 72 frames of 96x128 at 30 fps whose grey
    level encodes the frame number (ramp_value): decoded order and sampling can be checked from pixels."""
    from data.common.video_io import write_mp4

    root = tmp_path_factory.mktemp("ramp_videos")
    frames = np.stack([np.full((96, 128, 3), ramp_value(t), np.uint8) for t in range(72)])
    for subject in ("s01", "s02"):
        for take in ("a", "b"):
            write_mp4(root / subject / f"{subject}_{take}.mp4", frames, 30.0, crf=10)
    return root


@pytest.fixture(scope="session")
def ramp_shards(ramp_videos, tmp_path_factory):
    """The ramp videos packed in-process: 64-frame 80x80 clips every 4 frames -> 12 clips in 6 shards."""
    from data.shards.pack import PackConfig, pack

    out = tmp_path_factory.mktemp("ramp_shards")
    cfg = PackConfig(source="folder", source_path=str(ramp_videos), out_dir=str(out),
                     clip_frames=64, clip_stride=4, size=80, clips_per_shard=2, crf=10, gop=16, workers=1)
    return pack(cfg, progress=False)


# --- a tiny synthetic spotting set (added for tests/test_finetune.py, tests/test_loso.py, tests/test_spot.py) ---
TINY_SPOTTING_OVERRIDES = ["subjects=3", "videos_per_subject=1", "duration_s=8", "events.macro_per_video=[1,1]",
                           "events.micro_per_video=[1,2]", "events.macro_duration_s=[0.6,1.5]"]


# The detector spotter trained briefly: 8 s videos, 2 short training lengths to choose between.
# One detector on every channel set read (early fusion): the fixtures narrow `channels`, which loso.yaml's late-fusion
# groups would refuse; late fusion runs in test_detector's late-fusion tests and in the e2e demo run.
TINY_DETECTOR_OVERRIDES = ["detector.steps_grid=[30,60]", "detector.detector.crop_s=8.0", "detector.groups=[]"]


@pytest.fixture(scope="session")
def tiny_spotting_set(tmp_path_factory):
    """data.synthetic.generate: 3 subjects x 1 video x 8 s at 30 fps (240 frames each), 1 macro + 1-2 micro events each."""
    from data.synthetic.config import load_synthetic_config
    from data.synthetic.generate import generate

    cfg = load_synthetic_config(None, TINY_SPOTTING_OVERRIDES)
    return generate(cfg, tmp_path_factory.mktemp("tiny_spotting") / "data", progress=False)


@pytest.fixture(scope="session")
def tiny_finetune_overrides():
    """finetune config overrides that keep tests fast: few windows, few epochs, one thread."""
    return ["granularities=[{name: micro, span_s: 0.5, hop_s: 0.5},"
            " {name: macro, span_s: 2.0, hop_s: 1.5}]",
            "train.epochs=8", "train.threads=1", "model.head_hidden=32"]


@pytest.fixture(scope="session")
def tiny_loso_run(tiny_spotting_set, tiny_finetune_overrides, tmp_path_factory):
    """`python -m spotting loso` (Ray folds) on the tiny set: (completed process, out folder)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("tiny_loso") / "loso"
    args = [sys.executable, "-m", "spotting", "loso", "--config", "configs/spotting/loso.yaml",
            f"finetune.data.root={tiny_spotting_set}", f"out={out}",
            "parallel=true", *[f"finetune.{o}" for o in tiny_finetune_overrides], *TINY_DETECTOR_OVERRIDES]
    return subprocess.run(args, capture_output=True, text=True, timeout=1200), out


# --- one torch thread (added for tests/test_model.py, tests/test_timm_model.py) ---
@pytest.fixture
def one_torch_thread():
    """Tiny models: on a shared 2-core machine, intra-op threads mostly wait for each other (10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
