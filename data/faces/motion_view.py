"""The motion view: what the encoder sees of a stabilised face, for pretraining and for the spotter alike.

A stabilised stream (data.faces.stabilise: grey crops of the canonical face on a fixed time grid) becomes the
model input of one window in three steps, each a choice of `MotionViewConfig`:

1. **Lighting normalisation** (`lighting_normalise`): "plane" fits log(frame / median face) over the face by a
   gain + linear gradient (the synthetic set's illumination model, a first-order model of real drifts) and
   divides it out; "gain" removes a global gain only; "highpass" divides by a blurred copy.
2. **Temporal contrast** (`contrast_view`): the frames, each frame minus the window's first frame ("ref"), minus
   the window mean ("mean"), minus a causal running mean ("running"), minus the video's median face ("video"),
   minus the frame before ("diff"), or the normal-flow view ("normal"). Static appearance (identity) cancels in
   all but "none".
3. **Scale and channels** (`window_view`): times `gain`, replicated to the encoder's 3 input channels.

`window_view` is the one function both users call: the spotter's encoder channels (finetune.encoder.features,
on float frames normalised over the whole video) and pretraining (`motion_view`, on the uint8 clips of shards
packed with crop: stabilised, normalised the same way at pack time). Contrasts that need the whole video
("video", "running") cannot be made from a shard clip and are refused there (CLIP_CONTRASTS).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Literal

import cv2
import numpy as np

from data.common.config import Config, setting
from data.common.errors import ConfigError, DataError
from data.faces.stabilise import StableVideo, one_of

LIGHTING = ("none", "gain", "plane", "highpass")
CONTRAST = ("none", "ref", "mean", "running", "video", "diff", "normal")
VIDEO_CONTRASTS = ("video", "running")  # need the whole video's frames
CLIP_CONTRASTS = tuple(c for c in CONTRAST if c not in VIDEO_CONTRASTS)  # a clip alone determines these


@dataclasses.dataclass
class MotionViewConfig(Config):
    """What one model window shows."""
    lighting: str = "plane"  # LIGHTING
    contrast: str = "ref"  # CONTRAST
    gain: float = setting(1.0 / 16.0, gt=0)  # grey levels -> model units (~+-1 for a few-pixel expression edge)
    running_tau_s: float = setting(1.0, gt=0)  # time constant of the "running" contrast
    diff_lag_s: float = setting(0.1, gt=0)  # lag of the "diff" contrast
    channels: Literal["grey", "grey_app"] = "grey"  # grey: contrast x3; grey_app: [contrast, contrast, appearance]
    # which encoder tokens are pooled: "final" (forward_all: after every block and the final LayerNorm),
    # "embed" (the tubelet embedding + positions: purely local), "block<i>" (after block i, before the norm).
    # LGI blocks mix every token with the clip's region tokens, so deeper tokens also carry other regions' motion.
    layer: str = "final"
    # spatial Gaussian blur (sigma, px) of the normalised frames before the contrast: sensor and compression noise
    # is independent per pixel while a 1-2 px expression displacement moves smooth edges
    blur_px: float = setting(0.0, ge=0)

    def check(self) -> None:
        one_of(self.lighting, LIGHTING, "lighting")
        one_of(self.contrast, CONTRAST, "contrast")
        one_of(self.channels, ("grey", "grey_app"), "channels")
        if self.layer not in ("final", "embed") and not (self.layer.startswith("block") and self.layer[5:].isdigit()):
            raise ConfigError(f"unknown layer {self.layer!r}", field="layer", fix="final, embed or block<i>")

    def key(self) -> str:
        # fields added after caches were written stay out of the key while at their default (caches stay valid)
        raw = {k: v for k, v in dataclasses.asdict(self).items() if not (k in _LATE and v == _LATE[k])}
        return json.dumps(raw, sort_keys=True)


_LATE = {"layer": "final", "blur_px": 0.0}


def face_mask(size: int, landmarks: np.ndarray | None = None) -> np.ndarray:
    """A boolean ellipse over the canonical face (where lighting is fitted), [S, S]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return ((xx - 0.5) / 0.36) ** 2 + ((yy - 0.55) / 0.45) ** 2 <= 1.0


def lighting_normalise(crops: np.ndarray, method: str = "plane", reference: np.ndarray | None = None,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """float32 [N, S, S] grey in [0, 255] with the illumination change relative to `reference` removed.

    "plane" and "gain": `divide_lighting`. "highpass": frame / blur(frame) * mean (reference-free).
    """
    if method not in LIGHTING:
        raise ConfigError(f"unknown lighting {method!r}", field="lighting", fix=f"use one of {LIGHTING}")
    x = crops.astype(np.float32)
    if method == "none":
        return x
    if method == "highpass":
        return highpass_normalise(x)
    return divide_lighting(x, method, reference, mask)


def highpass_normalise(x: np.ndarray) -> np.ndarray:
    """float32 frames [N, S, S] divided by their own blur (sigma S / 16), times 128."""
    out = np.empty_like(x)
    for i in range(len(x)):
        blur = cv2.GaussianBlur(x[i], (0, 0), x.shape[1] / 16)
        out[i] = x[i] / np.maximum(blur, 4.0) * 128.0
    return out


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
            raise DataError("contrast 'video' needs the video's median face", field="contrast")
        return clip - video_reference[None]
    if method == "running":
        if running is None:
            raise DataError("contrast 'running' needs the running mean frames", field="contrast")
        return clip - running
    if method == "diff":
        prev = np.concatenate([np.repeat(clip[:1], diff_lag, 0), clip[:-diff_lag]])
        return clip - prev
    if method == "normal":
        return normal_motion(clip, clip[0])
    raise ConfigError(f"unknown contrast {method!r}", field="contrast", fix=f"use one of {CONTRAST}")


def normal_motion(clip: np.ndarray, reference: np.ndarray, floor: float = 4.0) -> np.ndarray:
    """Normal-flow magnitude (px) of each frame against `reference`: |frame - reference| / |grad reference|,
    regularised by `floor` grey levels per pixel (optical-flow constraint I_t + grad(I).v = 0). A pixel difference
    scales with the local texture, so a 1 px lip-corner shift on weak texture stays below the noise of strong edges;
    dividing by the gradient turns it into a displacement, as flow does, without computing flow."""
    gx = cv2.Sobel(reference, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(reference, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    grad2 = gx * gx + gy * gy
    diff = clip - reference[None]
    return (diff * np.sqrt(grad2)[None] / (grad2[None] + floor * floor)).astype(np.float32) * 16.0


def running_mean(frames: np.ndarray, tau_steps: float) -> np.ndarray:
    """Causal exponential mean of float frames [N, S, S] with time constant `tau_steps`; out[i] excludes i."""
    alpha = 1.0 / max(1.0, tau_steps)
    out = np.empty_like(frames)
    acc = frames[0].astype(np.float32).copy()
    for i in range(len(frames)):
        out[i] = acc
        acc += alpha * (frames[i] - acc)
    return out


def normalised_stream(sv: StableVideo, cfg: MotionViewConfig) -> tuple[np.ndarray, np.ndarray]:
    """(lighting-normalised float32 frames [N, S, S], the video's median face [S, S])."""
    x = lighting_normalise(sv.crops, cfg.lighting)
    if cfg.blur_px > 0:
        for i in range(len(x)):
            x[i] = cv2.GaussianBlur(x[i], (0, 0), cfg.blur_px)
    ref = np.median(x[:: max(1, len(x) // 200)], axis=0)
    return x, ref


@dataclasses.dataclass
class ViewStream:
    """What window_view reads of one video: its normalised frames, median face and (contrast "running") running
    mean, and the rate of its grid."""
    frames: np.ndarray  # float32 [N, S, S]
    reference: np.ndarray  # float32 [S, S]
    running: np.ndarray | None
    rate_hz: float


def view_stream(sv: StableVideo, cfg: MotionViewConfig) -> ViewStream:
    x, reference = normalised_stream(sv, cfg)
    running = running_mean(x, cfg.running_tau_s * sv.rate_hz) if cfg.contrast == "running" else None
    return ViewStream(x, reference, running, sv.rate_hz)


def window_view(clip: np.ndarray, cfg: MotionViewConfig, rate_hz: float, reference: np.ndarray | None = None,
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


def stream_windows(stream: ViewStream, windows, cfg: MotionViewConfig) -> np.ndarray:
    """Model input [B, 3, T, S, S] float32 of grid windows (finetune.windows.Window: indices into the grid)."""
    return np.stack([window_view(stream.frames[w.indices], cfg, stream.rate_hz, stream.reference,
                                 None if stream.running is None else stream.running[w.indices]) for w in windows])


def check_clip_view(cfg: MotionViewConfig) -> None:
    """A view a shard clip alone can make (pretraining sees clips, not videos)."""
    if cfg.contrast not in CLIP_CONTRASTS:
        raise ConfigError(f"contrast {cfg.contrast!r} needs the whole video, pretraining sees clips",
                          field="motion.contrast", fix=f"use one of {CLIP_CONTRASTS}")
    if cfg.channels != "grey":
        raise ConfigError(f"channels {cfg.channels!r}: pretraining's motion input is grey only",
                          field="motion.channels", fix="set motion.channels=grey")
    if cfg.blur_px:
        raise ConfigError("pretraining's motion input has no blur", field="motion.blur_px", fix="set it to 0")


def motion_view(clips: np.ndarray, cfg: MotionViewConfig, rate_hz: float) -> np.ndarray:
    """uint8 grey clips [B, T, S, S] of a stabilised shard set (lighting-normalised at pack time) -> float32 model
    input [B, 3, T, S, S], window by window as the spotter makes it."""
    return np.stack([window_view(c.astype(np.float32), cfg, rate_hz) for c in clips])
