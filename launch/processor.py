"""The processor of an encoder release: preprocessor_config.json + processing_spotmae.py (launch/hf), so that
`AutoProcessor.from_pretrained(release, trust_remote_code=True)` makes the model's input as SpotMAE makes it.

The settings come from what the encoder was trained to see: an encoder pretrained on the motion view gets the
view of its pretraining config (or, for an encoder folder that does not carry one, the view and granularities
the spotter's encoder channels use by default: spotting.channels.encoder.EncoderChannelsConfig); an RGB encoder
gets the heads' granularities (the spotter's own, or finetune's defaults) and ImageNet normalisation. A view the
processor cannot make without OpenCV (data.faces.motion_view: lighting "highpass", contrast "normal", blur) gets
no processor, and the card says why.

`check` loads the written processor back as users will and compares it, on a probe stream, with the project's
own functions (data.faces.motion_view.view_stream + stream_windows on finetune.encoder.features.grid_windows;
finetune.heads.predict.window_batch): every value must be equal.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from data.clips.augment import IMAGENET_MEAN, IMAGENET_STD
from data.common.atomic import write_bytes, write_text
from data.common.errors import DataError
from data.faces.motion_view import MotionViewConfig, stream_windows, view_stream
from data.faces.stabilise import StableVideo
from finetune.encoder.features import grid_windows
from finetune.heads.config import FinetuneConfig
from finetune.heads.predict import window_batch
from finetune.windows import Granularity, video_windows
from spotting.channels.encoder import EncoderChannelsConfig

PROCESSING_FILE = Path(__file__).with_name("hf") / "processing_spotmae.py"
CONFIG_FILE = "preprocessor_config.json"
AUTO_MAP = {"AutoProcessor": "processing_spotmae.SpotMAEProcessor"}
VIEW_FIELDS = ("lighting", "contrast", "gain", "running_tau_s", "diff_lag_s", "channels", "blur_px")


def unsupported(view: MotionViewConfig) -> str | None:
    """Why the released processor cannot make this view (it runs without OpenCV), or None."""
    if view.lighting == "highpass" or view.contrast == "normal" or view.blur_px:
        return (f"the view (lighting {view.lighting}, contrast {view.contrast}, blur_px {view.blur_px:g}) needs "
                "OpenCV, which the released processor does without")
    return None


def settings(cfg, granularities: list[Granularity] | None = None,
             view: MotionViewConfig | None = None) -> tuple[dict | None, str | None]:
    """(processor settings, None) for an encoder of ModelConfig `cfg`, or (None, the reason there is none).
    granularities: the heads' (rgb) or the encoder channels' (motion), default the project's; view: the motion
    view the encoder was pretrained on (default EncoderChannelsConfig's)."""
    base = {"input": cfg.input, "frames": cfg.frames, "size": cfg.img_size}
    if cfg.input == "rgb":
        grans = granularities or FinetuneConfig().granularities
        return {**base, "granularities": [dataclasses.asdict(g) for g in grans], "image_mean": list(IMAGENET_MEAN),
                "image_std": list(IMAGENET_STD)}, None
    channels = EncoderChannelsConfig()
    view = view or channels.view
    reason = unsupported(view)
    if reason:
        return None, reason
    grans = granularities or channels.granularities
    return {**base, "granularities": [dataclasses.asdict(g) for g in grans],
            "rate_hz": channels.stabilisation.rate_hz, **{k: getattr(view, k) for k in VIEW_FIELDS}}, None


def write(folder: Path, values: dict) -> None:
    """processing_spotmae.py and preprocessor_config.json into a release folder."""
    write_bytes(folder / PROCESSING_FILE.name, PROCESSING_FILE.read_bytes())
    write_text(folder / CONFIG_FILE, json.dumps({**values, "auto_map": AUTO_MAP}, indent=2) + "\n")


def probe_frames(values: dict, seconds: float = 4.0, seed: int = 0) -> tuple[np.ndarray, float]:
    """(uint8 frames a processor of `values` reads, their rate): a smooth face-sized blob that drifts and
    brightens, plus noise, long enough for every granularity's window."""
    rate = values.get("rate_hz", 30.0)
    n, size = int(seconds * rate), values["size"]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.arange(n)[:, None, None] / n
    face = 90 + 60 * np.exp(-((xx - 0.5 - 0.05 * t) ** 2 + (yy - 0.55) ** 2) / 0.08) * (1 + 0.3 * t)
    grey = np.clip(face + rng.normal(0, 3, face.shape), 0, 255).astype(np.uint8)
    return (grey if values["input"] == "motion" else np.repeat(grey[..., None], 3, axis=-1)), rate


def project_input(values: dict, frames: np.ndarray, rate: float, gran: Granularity) -> np.ndarray:
    """What SpotMAE feeds the encoder for these frames and one granularity, in transformers' layout
    [windows, frames, 3, size, size]."""
    if values["input"] == "rgb":
        windows = video_windows("probe", len(frames), rate, gran.span_s, gran.hop_s, values["frames"])
        clips = window_batch(frames, windows).numpy()
    else:
        view = MotionViewConfig(**{k: values[k] for k in VIEW_FIELDS})
        n = len(frames)
        placeholder = np.zeros((n, 68, 2), np.float32)  # view_stream reads the crops and the rate only
        sv = StableVideo("probe", rate, n, rate, np.arange(n), frames, placeholder, placeholder,
                         np.zeros((n, 2, 3), np.float32))
        clips = stream_windows(view_stream(sv, view), grid_windows(n, rate, gran, values["frames"]), view)
    return clips.transpose(0, 2, 1, 3, 4)


def load(folder):
    """AutoProcessor.from_pretrained(folder, trust_remote_code=True), offline: the way users will load it."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(folder), trust_remote_code=True, local_files_only=True)


def check(folder: Path, values: dict) -> None:
    """DataError unless the written processor gives exactly the project's input for every granularity."""
    processor = load(folder)
    frames, rate = probe_frames(values)
    fps = None if values["input"] == "motion" else rate
    for g in values["granularities"]:
        want = project_input(values, frames, rate, Granularity(**g))
        got = processor(frames, fps=fps, granularity=g["name"], return_tensors="np")["pixel_values"]
        if got.shape != want.shape or not np.array_equal(got, want):
            raise DataError(f"the released processor's input for granularity {g['name']!r} differs from "
                            f"SpotMAE's ({list(got.shape)} vs {list(want.shape)})", path=folder / CONFIG_FILE,
                            fix="launch/hf/processing_spotmae.py is out of step with data/faces/motion_view.py")
