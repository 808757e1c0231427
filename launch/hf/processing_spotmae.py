"""SpotMAE's input processor in transformers conventions: face frames -> `pixel_values` of every model window.

Copied verbatim into every encoder release beside modeling_spotmae.py and named in preprocessor_config.json's
`auto_map`, so `AutoProcessor.from_pretrained(release, trust_remote_code=True)` builds it with torch, numpy and
transformers alone (no OpenCV, no PIL, no SpotMAE checkout). It makes what SpotMAE shows the encoder:

- input "motion" (an encoder pretrained on the motion view, and the spotter's encoder channels): the stabilised
  grey face of a whole video on the canonical time grid (SpotMAE's data.faces.stabilise: uint8 [N, S, S] at
  `rate_hz`) is lighting-normalised against the video's median face, cut into windows of `frames` grid steps per
  granularity, each turned into its temporal-contrast view (data.faces.motion_view.window_view), scaled by `gain`
  and repeated over the 3 channels;
- input "rgb" (the spotting heads' encoder): aligned RGB face crops uint8 [N, S, S, 3] at the video's fps, cut
  into windows the same way, scaled to [0, 1] and normalised with image_mean / image_std.

The pieces are copies of the project's functions, marked `# Copied from <module>.<name>` and kept equal to their
sources by tests/test_copies.py; tests/test_release.py runs this processor and the model in an environment that
holds only torch and transformers and compares them with the project's encoder channels. Views that need OpenCV
(lighting "highpass", contrast "normal", blur_px > 0) are refused when the processor is built.

    processor = AutoProcessor.from_pretrained("path/or/repo", trust_remote_code=True)
    inputs = processor(stabilised_grey_frames, granularity="micro")  # pixel_values [W, frames, 3, S, S]
    windows = processor.windows(len(stabilised_grey_frames), granularity="micro")  # each window's grid steps
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

INPUTS = ("motion", "rgb")
LIGHTING = ("none", "gain", "plane")  # data.faces.motion_view.LIGHTING without "highpass" (OpenCV's blur)
CONTRAST = ("none", "ref", "mean", "running", "video", "diff")  # without "normal" (OpenCV's Sobel)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_GRANULARITIES = ({"name": "micro", "span_s": 0.5, "hop_s": 0.25},
                         {"name": "macro", "span_s": 3.0, "hop_s": 1.0})


class SpotMAEInputError(ValueError):
    """Frames or settings this processor cannot turn into the model's input."""

    def __init__(self, message: str, *, path=None, field: str | None = None, fix: str | None = None):
        head = ": ".join(str(p) for p in (path, field) if p)
        super().__init__((f"{head}: {message}" if head else message) + (f" ({fix})" if fix else ""))


# Copied from finetune.windows.Window
@dataclasses.dataclass(frozen=True)
class Window:
    video: str
    indices: np.ndarray  # [frames] source-frame indices, non-decreasing
    bounds: np.ndarray  # [frames + 1]: sampled frame i stands for source frames bounds[i] .. bounds[i+1]-1


# Copied from finetune.windows.sample_step with DataError->SpotMAEInputError
def sample_step(fps: float, span_s: float, frames: int) -> float:
    """Source frames between two sampled frames; never below 1 (we do not invent frames)."""
    if fps <= 0:
        raise SpotMAEInputError(f"fps must be > 0, got {fps}", field="fps", fix="fix the video table")
    return max(1.0, span_s * fps / frames)


# Copied from finetune.windows.window_starts
def window_starts(num_frames: int, step: float, frames: int, hop: int) -> list[int]:
    """Start frames of sliding windows covering the whole video; the last window ends at the last frame."""
    length = int(round(step * frames))
    last = max(0, num_frames - length)
    starts = list(range(0, last + 1, max(1, hop)))
    if starts[-1] != last:
        starts.append(last)
    return starts


# Copied from finetune.windows.make_window
def make_window(video: str, start: int, step: float, frames: int, num_frames: int) -> Window:
    bounds = np.round(start + np.arange(frames + 1) * step).astype(np.int64)
    bounds = np.minimum(bounds, num_frames)
    indices = np.minimum(bounds[:-1], num_frames - 1)
    # A video shorter than the window repeats its last frame; each repeat stands for no source frame.
    return Window(video, indices, bounds)


# Copied from finetune.windows.video_windows with DataError->SpotMAEInputError
def video_windows(video: str, num_frames: int, fps: float, span_s: float, hop_s: float,
                  frames: int) -> list[Window]:
    """All sliding windows of one video (or a grid, at its rate) for one granularity's span and hop."""
    if num_frames < 1:
        raise SpotMAEInputError(f"video {video!r} has no frames", field="num_frames", fix="fix the video table")
    step = sample_step(fps, span_s, frames)
    hop = max(1, int(round(hop_s * fps)))
    return [make_window(video, s, step, frames, num_frames) for s in window_starts(num_frames, step, frames, hop)]


# Copied from data.faces.motion_view.face_mask
def face_mask(size: int, landmarks: np.ndarray | None = None) -> np.ndarray:
    """A boolean ellipse over the canonical face (where lighting is fitted), [S, S]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return ((xx - 0.5) / 0.36) ** 2 + ((yy - 0.55) / 0.45) ** 2 <= 1.0


# Copied from data.faces.motion_view.divide_lighting
def divide_lighting(x: np.ndarray, method: str, reference: np.ndarray | None = None,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """float32 frames [N, S, S] divided by their illumination relative to `reference` (default: the median frame).

    "plane": per frame, log(frame / reference) over the face mask is fitted by a + b x + c y (least squares, two
    rounds, the second ignoring the 20% largest residuals so expression changes do not bend the fit) and the
    frame is divided by exp(plane). "gain": a only. Plain numpy: the released processor runs a copy of it.
    """
    n, s, _ = x.shape
    if reference is None:
        reference = np.median(x[:: max(1, n // 200)], axis=0)
    if mask is None:
        mask = face_mask(s)
    ys, xs = np.nonzero(mask)
    design = np.column_stack([np.ones(len(xs)), (xs - s / 2) / s, (ys - s / 2) / s])
    if method == "gain":
        design = design[:, :1]
    log_ref = np.log(np.maximum(reference[ys, xs], 4.0))
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    full = np.stack([np.ones((s, s), np.float32), (xx - s / 2) / s, (yy - s / 2) / s])[:design.shape[1]]
    out = np.empty_like(x)
    for i in range(n):
        ratio = np.log(np.maximum(x[i][ys, xs], 4.0)) - log_ref
        coef, *_ = np.linalg.lstsq(design, ratio, rcond=None)
        resid = np.abs(ratio - design @ coef)
        keep = resid <= np.quantile(resid, 0.8)
        coef, *_ = np.linalg.lstsq(design[keep], ratio[keep], rcond=None)
        out[i] = x[i] / np.exp(np.tensordot(coef.astype(np.float32), full, axes=1))
    return out


def lighting_normalise(crops: np.ndarray, method: str) -> np.ndarray:
    """data.faces.motion_view.lighting_normalise for the methods this processor implements (LIGHTING)."""
    if method not in LIGHTING:
        raise SpotMAEInputError(f"lighting {method!r} is not implemented here", field="lighting",
                                fix=f"use one of {LIGHTING}")
    x = crops.astype(np.float32)
    return x if method == "none" else divide_lighting(x, method)


def normal_motion(clip: np.ndarray, reference: np.ndarray, floor: float = 4.0) -> np.ndarray:
    """The "normal" contrast needs OpenCV's Sobel filter: the processor refuses it when it is built."""
    raise SpotMAEInputError("contrast 'normal' is not implemented here", field="contrast",
                            fix=f"use one of {CONTRAST}")


# Copied from data.faces.motion_view.contrast_view with DataError->SpotMAEInputError, ConfigError->SpotMAEInputError
def contrast_view(clip: np.ndarray, method: str, video_reference: np.ndarray | None = None,
                  running: np.ndarray | None = None, diff_lag: int = 1) -> np.ndarray:
    """One window's frames float32 [T, S, S] -> its temporal-contrast view [T, S, S].

    "ref": minus the window's first frame (what changed since the window began); "mean": minus the window's
    mean frame; "video": minus the video's median face; "running": minus a causal running mean supplied per
    frame (`running`, same shape); "diff": minus the frame `diff_lag` before (the first frames repeat);
    "normal": the normal-flow view against the first frame (normal_motion, signed);
    "none": the frames themselves.
    """
    if method == "none":
        return clip
    if method == "ref":
        return clip - clip[:1]
    if method == "mean":
        return clip - clip.mean(0, keepdims=True)
    if method == "video":
        if video_reference is None:
            raise SpotMAEInputError("contrast 'video' needs the video's median face", field="contrast")
        return clip - video_reference[None]
    if method == "running":
        if running is None:
            raise SpotMAEInputError("contrast 'running' needs the running mean frames", field="contrast")
        return clip - running
    if method == "diff":
        prev = np.concatenate([np.repeat(clip[:1], diff_lag, 0), clip[:-diff_lag]])
        return clip - prev
    if method == "normal":
        return normal_motion(clip, clip[0])
    raise SpotMAEInputError(f"unknown contrast {method!r}", field="contrast", fix=f"use one of {CONTRAST}")


# Copied from data.faces.motion_view.running_mean
def running_mean(frames: np.ndarray, tau_steps: float) -> np.ndarray:
    """Causal exponential mean of float frames [N, S, S] with time constant `tau_steps`; out[i] excludes i."""
    alpha = 1.0 / max(1.0, tau_steps)
    out = np.empty_like(frames)
    acc = frames[0].astype(np.float32).copy()
    for i in range(len(frames)):
        out[i] = acc
        acc += alpha * (frames[i] - acc)
    return out


# Copied from data.faces.motion_view.ViewStream
@dataclasses.dataclass
class ViewStream:
    """What window_view reads of one video: its normalised frames, median face and (contrast "running") running
    mean, and the rate of its grid."""
    frames: np.ndarray  # float32 [N, S, S]
    reference: np.ndarray  # float32 [S, S]
    running: np.ndarray | None
    rate_hz: float


# Copied from data.faces.motion_view.window_view with MotionViewConfig->SpotMAEProcessor
def window_view(clip: np.ndarray, cfg: SpotMAEProcessor, rate_hz: float, reference: np.ndarray | None = None,
                running: np.ndarray | None = None) -> np.ndarray:
    """One window's normalised frames float32 [T, S, S] -> the model input [3, T, S, S] (`reference`: the video's
    median face, for contrast "video" and the grey_app appearance channel; `running`: the running mean of the
    window's frames, for contrast "running")."""
    view = contrast_view(clip, cfg.contrast, reference, running, max(1, round(cfg.diff_lag_s * rate_hz)))
    if cfg.contrast == "none":
        view = view - 128.0  # appearance, centred
    view = view * cfg.gain
    if cfg.channels == "grey_app":
        base = 128.0 if cfg.contrast == "video" or reference is None else reference[None]
        return np.stack([view, view, (clip - base) * cfg.gain]).astype(np.float32)
    return np.stack([view, view, view]).astype(np.float32)


# Copied from data.faces.motion_view.stream_windows with MotionViewConfig->SpotMAEProcessor
def stream_windows(stream: ViewStream, windows, cfg: SpotMAEProcessor) -> np.ndarray:
    """Model input [B, 3, T, S, S] float32 of grid windows (finetune.windows.Window: indices into the grid)."""
    return np.stack([window_view(stream.frames[w.indices], cfg, stream.rate_hz, stream.reference,
                                 None if stream.running is None else stream.running[w.indices]) for w in windows])


# Copied from data.clips.augment.channel_values
@functools.lru_cache(maxsize=16)
def channel_values(values: tuple[float, ...], device):
    """A per-channel constant as a float32 tensor [C, 1, 1, 1] on `device` (broadcasts over [..., C, T, H, W]).

    Made once per device: building it from a Python tuple on a GPU is a blocking host-to-device copy, which
    would put a host synchronisation into every train step that (un)normalises (and break CUDA graph capture).
    """
    import torch

    return torch.tensor(values, dtype=torch.float32, device=device).view(len(values), 1, 1, 1)


# Copied from data.clips.augment.normalise
def normalise(video, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 torch video [..., 3, T, H, W] (channels at dim -4) -> contiguous float32 (x / 255 - mean) / std.

    Works on CPU or on the GPU, so a loader can ship uint8 (4x less to copy) and normalise on the device.
    """
    import torch

    m, s = channel_values(tuple(mean), video.device), channel_values(tuple(std), video.device)
    # one pass converts and makes the result contiguous, whatever the input's strides
    out = video.to(torch.float32, memory_format=torch.contiguous_format)
    return out.div_(255.0).sub_(m).div_(s)


def one_of(value, options, field: str) -> None:
    if value not in options:
        raise SpotMAEInputError(f"{value!r} is not implemented here", field=field, fix=f"use one of {list(options)}")


class SpotMAEProcessor(FeatureExtractionMixin):
    """Face frames of one video -> pixel_values [windows, frames, 3, size, size] for SpotMAEModel.

    Settings (preprocessor_config.json): `input` ("motion" or "rgb"), `frames` and `size` (the model's),
    `granularities` (window span and hop in seconds, by name), `rate_hz` (the stabilised grid's rate, motion
    input), the motion view's `lighting`, `contrast`, `gain`, `running_tau_s`, `diff_lag_s`, `channels`
    (SpotMAE's MotionViewConfig), and `image_mean` / `image_std` (rgb input).
    """

    model_input_names = ["pixel_values"]

    def __init__(self, input: str = "motion", frames: int = 16, size: int = 160, rate_hz: float = 30.0,
                 granularities=DEFAULT_GRANULARITIES, lighting: str = "plane", contrast: str = "ref",
                 gain: float = 1.0 / 16.0, running_tau_s: float = 1.0, diff_lag_s: float = 0.1,
                 channels: str = "grey", blur_px: float = 0.0, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                 **kwargs):
        super().__init__(**kwargs)
        one_of(input, INPUTS, "input")
        one_of(lighting, LIGHTING, "lighting")
        one_of(contrast, CONTRAST, "contrast")
        one_of(channels, ("grey", "grey_app"), "channels")
        if blur_px:
            raise SpotMAEInputError(f"blur_px {blur_px} needs OpenCV's Gaussian blur", field="blur_px",
                                    fix="this processor implements blur_px 0")
        if not granularities:
            raise SpotMAEInputError("no granularities", field="granularities",
                                    fix='e.g. [{"name": "micro", "span_s": 0.5, "hop_s": 0.25}]')
        self.input, self.frames, self.size, self.rate_hz = input, int(frames), int(size), float(rate_hz)
        self.granularities = [dict(g) for g in granularities]
        self.lighting, self.contrast, self.gain = lighting, contrast, float(gain)
        self.running_tau_s, self.diff_lag_s, self.channels, self.blur_px = (float(running_tau_s), float(diff_lag_s),
                                                                            channels, float(blur_px))
        self.image_mean, self.image_std = list(image_mean), list(image_std)

    def granularity(self, name: str | None = None) -> dict:
        """One of `granularities` by name (None: the first)."""
        if name is None:
            return self.granularities[0]
        for g in self.granularities:
            if g["name"] == name:
                return g
        raise SpotMAEInputError(f"unknown granularity {name!r}", field="granularity",
                                fix=f"use one of {[g['name'] for g in self.granularities]}")

    def windows(self, num_frames: int, fps: float | None = None, granularity: str | None = None) -> list[Window]:
        """The windows __call__ cuts from `num_frames` frames: each one's frame indices and the frames each
        sampled frame stands for (`bounds`), to put window outputs back on the frame axis."""
        g = self.granularity(granularity)
        rate = self._rate(fps)
        return video_windows("grid" if self.input == "motion" else "video", num_frames, rate, g["span_s"],
                             g["hop_s"], self.frames)

    def __call__(self, frames, fps: float | None = None, granularity: str | None = None,
                 return_tensors: str | None = "pt") -> BatchFeature:
        """frames: motion input, the stabilised grey face uint8 [N, size, size] on the `rate_hz` grid (fps, if
        given, must be that rate); rgb input, aligned face crops uint8 [N, size, size, 3] at `fps`.
        Returns BatchFeature(pixel_values [windows, frames, 3, size, size] float32)."""
        frames = np.asarray(frames)
        self._check_frames(frames)
        windows = self.windows(len(frames), fps, granularity)
        if self.input == "motion":
            clips = stream_windows(self.view_stream(frames), windows, self)
        else:
            batch = torch.from_numpy(np.stack([frames[w.indices] for w in windows])).permute(0, 4, 1, 2, 3)
            clips = normalise(batch, self.image_mean, self.image_std).numpy()
        return BatchFeature({"pixel_values": np.ascontiguousarray(clips.transpose(0, 2, 1, 3, 4))},
                            tensor_type=return_tensors)

    def view_stream(self, frames: np.ndarray) -> ViewStream:
        """The lighting-normalised stream, its median face and (contrast "running") its running mean."""
        x = lighting_normalise(frames, self.lighting)
        reference = np.median(x[:: max(1, len(x) // 200)], axis=0)
        running = running_mean(x, self.running_tau_s * self.rate_hz) if self.contrast == "running" else None
        return ViewStream(x, reference, running, self.rate_hz)

    def _rate(self, fps: float | None) -> float:
        if self.input == "rgb":
            if fps is None:
                raise SpotMAEInputError("rgb input needs the video's frame rate", field="fps", fix="pass fps=...")
            return float(fps)
        if fps is not None and abs(float(fps) - self.rate_hz) > 1e-6:
            raise SpotMAEInputError(f"the motion input is the stabilised stream on a {self.rate_hz:g} Hz grid, got "
                                    f"fps={fps}", field="fps", fix="resample onto the grid first (SpotMAE's "
                                    "data.faces.stabilise) and leave fps out")
        return self.rate_hz

    def _check_frames(self, frames: np.ndarray) -> None:
        want = (self.size, self.size) if self.input == "motion" else (self.size, self.size, 3)
        what = "stabilised grey frames" if self.input == "motion" else "aligned RGB face crops"
        if frames.ndim != len(want) + 1 or frames.shape[1:] != want or len(frames) < 1:
            raise SpotMAEInputError(f"frames {list(frames.shape)}: expected {what} [N, {', '.join(map(str, want))}]",
                                    field="frames", fix=f"pass a video's {what} at the model's size")
        if self.input == "rgb" and frames.dtype != np.uint8:
            raise SpotMAEInputError(f"frames are {frames.dtype}: expected uint8 RGB", field="frames",
                                    fix="pass the crops as uint8 0-255")
