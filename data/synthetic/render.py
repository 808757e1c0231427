"""Render frames of one synthetic video: AU fields -> warp -> rigid head pose -> illumination -> sensor noise.

Per frame: the displacement D = sum_k a_k F_k on the canvas (one matrix product per chunk of frames), the
output pixel p maps through the inverse head pose to canvas point q, and the frame samples the neutral face at
q - D(q) (a backward warp, accurate to first order for these small, smooth displacements). With appearance
layers, the frame is multiplied by the canvas shading 1 + sum_k w_k L_k sampled at the same point, so wrinkles
sit on the skin that moves; frames where no layer is drawn in are rendered exactly as without them.
"""
from __future__ import annotations

import numpy as np

from data.faces.landmarks import canonical_points
from data.synthetic.faces import FIELD_STEP, Identity

CHUNK = 32
# Per-channel (RGB) share of a darkening: skin scatters red light into its own folds, so creases darken red least
# (a plain grey factor turns them green-grey against bright, red-clipped skin). Lightening is grey.
SHADOW_TINT = np.array([0.8, 1.0, 1.1], np.float32)
NOISE_BANK = 8     # noise fields drawn per video; each frame takes one at a random shift
NOISE_PAD = 32


def _pose_maps(identity: Identity, size: int, tx: float, ty: float, rot_deg: float, scale: float, grid):
    """Canvas coordinates (qx, qy) [S, S] seen by each output pixel under head pose (about the nose tip)."""
    cx, cy = (float(v) for v in canonical_points(size)[2])
    theta = np.deg2rad(float(rot_deg))
    cos, sin = float(np.cos(theta) / scale), float(np.sin(theta) / scale)
    # Python floats keep the arithmetic in float32 (a numpy float64 scalar would promote it).
    ox = cx + identity.margin - cos * (cx + float(tx)) - sin * (cy + float(ty))
    oy = cy + identity.margin + sin * (cx + float(tx)) - cos * (cy + float(ty))
    qx = cos * grid[0] + sin * grid[1] + ox
    qy = -sin * grid[0] + cos * grid[1] + oy
    return qx, qy


class _Noise:
    """Gaussian sensor noise without drawing S*S*3 normals per frame: a small bank, randomly shifted per frame."""

    def __init__(self, rng: np.random.Generator, size: int, sigma: float):
        self.rng = rng
        self.size = size
        self.bank = rng.standard_normal((NOISE_BANK, size + NOISE_PAD, size + NOISE_PAD, 3), dtype=np.float32)
        self.bank *= np.float32(sigma)

    def add_to(self, chunk: np.ndarray) -> None:
        picks = self.rng.integers(0, [NOISE_BANK, NOISE_PAD, NOISE_PAD], size=(len(chunk), 3))
        for frame, (b, y, x) in zip(chunk, picks):
            frame += self.bank[b, y:y + self.size, x:x + self.size]


def _layers(identity: Identity, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The AUs whose layer is ever drawn in (indices) and those layers flattened [A, C*C]."""
    if weights is None or identity.shading is None:
        return np.zeros(0, int), np.zeros((0, 0), np.float32)
    flat = identity.shading.reshape(len(identity.shading), -1)
    used = np.flatnonzero((weights.max(0) > 0) & (np.abs(flat).max(1) > 0))
    return used, flat[used]


def _shades(weights: np.ndarray, layers: np.ndarray, canvas: int) -> tuple[dict[int, int], np.ndarray]:
    """Canvas shading changes sum_k w_k L_k [F, C, C] for the frames of a chunk where a layer is drawn in, and
    {frame in chunk: map index}. `weights` [T, A] of the used layers."""
    shaded = np.flatnonzero(weights.max(1) > 0) if weights.shape[1] else np.zeros(0, int)
    maps = (weights[shaded] @ layers).reshape(len(shaded), canvas, canvas)
    return dict(zip(shaded.tolist(), range(len(shaded)))), maps


def render_frames(identity: Identity, curves: np.ndarray, pose: dict, light: dict, noise_sigma: float,
                  size: int, rng: np.random.Generator, shading: np.ndarray | None = None) -> np.ndarray:
    """uint8 frames [T, S, S, 3]. `curves` [T, K] AU amplitudes; pose/light hold per-frame arrays; `shading`
    [T, K] how far each AU's appearance layer is drawn in (motion.appearance_weights; None: warp only)."""
    import cv2

    n = len(curves)
    k, c = identity.fields.shape[:2]
    flat_fields = identity.fields.reshape(k, -1)
    layered, flat_layers = _layers(identity, shading)
    grid = np.mgrid[0:size, 0:size][::-1].astype(np.float32)  # (x, y)
    ramp_x = (grid[0] - (size - 1) / 2) / (size / 2)
    ramp_y = (grid[1] - (size - 1) / 2) / (size / 2)
    active = np.flatnonzero(np.abs(curves).max(0) > 0)  # skip AUs this video never uses
    noise = _Noise(rng, size, noise_sigma) if noise_sigma > 0 else None
    out = np.empty((n, size, size, 3), np.uint8)
    frame = np.empty((size, size, 3), np.uint8)
    inv_step = 1.0 / FIELD_STEP
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        amps = curves[start:stop, active]
        moving = np.flatnonzero(np.abs(amps).max(1) > 0) if len(active) else np.zeros(0, int)
        # Most frames of a long video hold no expression, blink or talking: they skip the field entirely.
        disp = (amps[moving] @ flat_fields[active]).reshape(len(moving), c, c, 2)
        slot = dict(zip(moving.tolist(), range(len(moving))))
        drawn = shading[start:stop, layered] if len(layered) else np.zeros((stop - start, 0), np.float32)
        shade_slot, shades = _shades(drawn, flat_layers, identity.base.shape[0])
        chunk = np.empty((stop - start, size, size, 3), np.float32)
        for i, t in enumerate(range(start, stop)):
            qx, qy = _pose_maps(identity, size, pose["tx"][t], pose["ty"][t], pose["rot_deg"][t],
                                pose["scale"][t], grid)
            if i in slot:
                d = cv2.remap(disp[slot[i]], qx * inv_step, qy * inv_step, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                qx, qy = qx - d[..., 0], qy - d[..., 1]
            cv2.remap(identity.base, qx, qy, cv2.INTER_LINEAR, dst=frame, borderMode=cv2.BORDER_REFLECT_101)
            chunk[i] = frame
            if i in shade_slot:
                skin = cv2.remap(shades[shade_slot[i]], qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
                skin = skin[..., None]
                chunk[i] *= np.maximum(1 + np.where(skin < 0, skin * SHADOW_TINT, skin), 0)
        shade = (light["gain"][start:stop, None, None] + light["gx"][start:stop, None, None] * ramp_x
                 + light["gy"][start:stop, None, None] * ramp_y)
        chunk *= shade[..., None]
        if noise is not None:
            noise.add_to(chunk)
        np.clip(chunk, 0, 255, out=chunk)
        out[start:stop] = np.rint(chunk)
    return out


def still_frames(identity: Identity, curves: np.ndarray, size: int, shading: np.ndarray | None = None) -> np.ndarray:
    """Frames [T, S, S, 3] of the AU curves alone: no head motion, even light, no noise (figures, measurements)."""
    zeros = np.zeros(len(curves), np.float32)
    pose = {"tx": zeros, "ty": zeros, "rot_deg": zeros, "scale": zeros + 1}
    light = {"gain": zeros + 1, "gx": zeros, "gy": zeros}
    return render_frames(identity, curves, pose, light, 0.0, size, np.random.default_rng(0), shading)
