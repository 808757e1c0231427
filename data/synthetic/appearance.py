"""Appearance layers of the action units: wrinkles and shading that a warp alone cannot make (FACS).

A layer is a signed shading pattern on the identity's canvas, placed from its neutral landmarks: creases are dark
lines with fainter light ridges beside them (a negated Ricker profile across the line, its ridges at 0.6: a fold
shades more than it lights), shadows are dark bands, highlights light ones. The renderer multiplies the
warped face by 1 + sum_k w_k(t) L_k, sampled through the same warp and head pose as the face, so a crease sits on
the skin that folds and moves with it; w_k(t) follows the AU's own activation (motion.appearance_weights).

Where each layer goes (FACS manual; DESIGN.md section 5): brow raise (AU1+2) horizontal forehead lines; inner brow
raise (AU1) shorter lines over the brow heads, bowed upward; brow lower (AU4) two vertical furrows between the
brows; eye narrowing (AU6/7) crow's feet fanning from the outer eye corners, a furrow under the lower lid and a
raised, lit cheek; lip corner pull (AU12) the nasolabial furrow from the nose wing to beyond the lip corner; lip
corner depress (AU15) folds below the lip corners; jaw open (AU25/26) a dark mouth interior between the lips
(teeth are not drawn: at 160 px they are a pixel or two). Lip press and blink carry no layer (the warp shows
them). No nose-wrinkle AU (AU9) is animated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.faces import landmarks as lm

TAPER = 0.25        # fraction of a line's length over which its ends fade in
CURVE_POINTS = 16   # samples of a quadratic Bezier line
RIDGE = 0.6         # a crease's light ridges relative to the Ricker profile's (+0.45 -> +0.27 of the fold's depth)


@dataclass(frozen=True)
class Stroke:
    points: np.ndarray   # [N, 2] canvas (x, y); one point makes a round blob
    width: float         # profile sigma in px
    kind: str            # "crease" | "shadow" | "highlight"
    weight: float = 1.0


def bezier(p0, p1, p2, n: int = CURVE_POINTS) -> np.ndarray:
    """n points of the quadratic Bezier curve p0 -> p2 pulled towards p1."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _profile(r: np.ndarray, kind: str) -> np.ndarray:
    """Shading across a line at r sigmas from it."""
    g = np.exp(-0.5 * r**2)
    if kind == "crease":
        ricker = -(1 - r**2) * g  # -1 in the fold, +0.45 on the ridges at r = sqrt(3)
        return np.where(ricker > 0, RIDGE * ricker, ricker)
    return -g if kind == "shadow" else g


def _nearest_on_polyline(grid: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance [P] from each grid point [P, 2] to the polyline `points` [N, 2], and the arc-length fraction [P]
    (0 at the first point, 1 at the last) of the nearest point on it."""
    if len(points) == 1:
        return np.linalg.norm(grid - points[0], axis=1), np.full(len(grid), 0.5)
    a, b = points[:-1], points[1:]
    seg = b - a
    seg_len2 = np.maximum((seg**2).sum(1), 1e-12)
    t = np.clip(((grid[:, None] - a[None]) * seg[None]).sum(-1) / seg_len2, 0, 1)   # [P, S]
    dist = np.linalg.norm(grid[:, None] - (a[None] + t[..., None] * seg[None]), axis=-1)
    best = dist.argmin(1)
    rows = np.arange(len(grid))
    lengths = np.sqrt(seg_len2)
    start = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    along = (start[best] + t[rows, best] * lengths[best]) / lengths.sum()
    return dist[rows, best], along


def draw(canvas: int, strokes: list[Stroke]) -> np.ndarray:
    """The strokes' summed shading [canvas, canvas] float32, each computed in its own bounding box."""
    out = np.zeros((canvas, canvas), np.float32)
    for stroke in strokes:
        reach = 4 * stroke.width
        x0, y0 = np.floor(stroke.points.min(0) - reach).astype(int).clip(0, canvas)
        x1, y1 = np.ceil(stroke.points.max(0) + reach + 1).astype(int).clip(0, canvas)
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1]
        grid = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        dist, along = _nearest_on_polyline(grid, stroke.points)
        ends = np.clip(np.minimum(along, 1 - along) / TAPER, 0, 1)
        fade = ends * ends * (3 - 2 * ends)
        if len(stroke.points) == 1:
            fade = np.ones_like(fade)
        value = stroke.weight * _profile(dist / stroke.width, stroke.kind) * fade
        out[y0:y1, x0:x1] += value.reshape(y1 - y0, x1 - x0).astype(np.float32)
    return out


class _Face:
    """Neutral landmarks on the canvas with the lengths the layers are placed by, and the identity's jitter."""

    def __init__(self, points: np.ndarray, rng: np.random.Generator, jitter: float, width: float):
        self.p = points.astype(np.float64)
        self.iod = float(np.linalg.norm(self.p[lm.LEFT_EYE].mean(0) - self.p[lm.RIGHT_EYE].mean(0)))
        self.rng = rng
        self.jitter = jitter
        self.width = width * self.iod

    def shake(self, *points) -> list[np.ndarray]:
        """The points, each moved by this identity's jitter (so no two faces wrinkle identically)."""
        return [np.asarray(p, np.float64) + self.rng.normal(0, self.jitter * self.iod, 2) for p in points]

    def line(self, p0, p1, p2, kind: str = "crease", weight: float = 1.0, width: float = 1.0) -> Stroke:
        return Stroke(bezier(*self.shake(p0, p1, p2)), width * self.width, kind, weight)


def _forehead(face: _Face, inner: bool) -> list[Stroke]:
    """Horizontal lines above the brows: across the forehead (AU1+2) or over the brow heads, bowed up (AU1)."""
    p, iod = face.p, face.iod
    top = p[17:27, 1].min()
    cx = (p[21, 0] + p[22, 0]) / 2
    half = (p[26, 0] - p[17, 0]) / 2 * (0.55 if inner else 1.0)
    bow = (0.08 if inner else 0.03) * iod
    strokes = []
    for height, weight in ((0.16, 1.0), (0.3, 0.85), (0.44, 0.65)):
        y = top - height * iod
        strokes.append(face.line((cx - half, y), (cx, y - 2 * bow), (cx + half, y), weight=weight))
    return strokes


def _glabella(face: _Face) -> list[Stroke]:
    """AU4: two near-vertical furrows between the brow heads, a little further apart at the top."""
    p, iod = face.p, face.iod
    cx, gap = (p[21, 0] + p[22, 0]) / 2, p[22, 0] - p[21, 0]
    y_top, y_low = min(p[21, 1], p[22, 1]) - 0.2 * iod, p[27, 1] - 0.05 * iod
    strokes = []
    for side in (-1, 1):
        x_low, x_top = cx + side * 0.22 * gap, cx + side * (0.22 * gap + 0.05 * iod)
        strokes.append(face.line((x_top, y_top), ((x_top + x_low) / 2, (y_top + y_low) / 2), (x_low, y_low)))
    return strokes


def _eyes(face: _Face) -> list[Stroke]:
    """AU6/7: crow's feet at the outer corners, a furrow under the lower lid, a raised (lit) cheek."""
    p, iod = face.p, face.iod
    strokes = []
    for outer, inner, lower, eye in ((36, 39, (41, 40), lm.RIGHT_EYE), (45, 42, (46, 47), lm.LEFT_EYE)):
        out = (p[outer] - p[inner]) / np.linalg.norm(p[outer] - p[inner])
        for angle, weight in ((-28, 0.8), (0, 1.0), (28, 0.8)):
            c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
            d = np.array([c * out[0] - s * out[1], s * out[0] + c * out[1]])
            a, b = p[outer] + 0.1 * iod * d, p[outer] + 0.32 * iod * d
            strokes.append(face.line(a, (a + b) / 2, b, weight=weight, width=0.8))
        below = np.array([0.0, 0.14 * iod])
        ends = p[[inner, outer]] + below
        mid = p[list(lower)].mean(0) + below + np.array([0.0, 0.03 * iod])
        strokes.append(face.line(ends[0], mid, ends[1], weight=0.7))
        centre = p[eye].mean(0) + np.array([0.0, 0.45 * iod])
        strokes.append(Stroke(centre[None], 0.16 * iod, "highlight", 0.35))
    return strokes


def _nasolabial(face: _Face) -> list[Stroke]:
    """AU12: the fold from beside the nose wing to beyond the lip corner, bowed away from the mouth."""
    p, iod = face.p, face.iod
    strokes = []
    for wing, corner, side in ((31, 48, -1), (35, 54, 1)):
        start = p[wing] + iod * np.array([side * 0.12, -0.04])
        end = p[corner] + iod * np.array([side * 0.14, 0.12])
        bend = (start + end) / 2 + iod * np.array([side * 0.08, 0.0])
        strokes.append(face.line(start, bend, end, width=1.3))
    return strokes


def _marionette(face: _Face) -> list[Stroke]:
    """AU15: short folds running down and out from the lip corners."""
    p, iod = face.p, face.iod
    strokes = []
    for corner, side in ((48, -1), (54, 1)):
        start = p[corner] + iod * np.array([side * 0.05, 0.05])
        end = p[corner] + iod * np.array([side * 0.1, 0.35])
        strokes.append(face.line(start, (start + end) / 2 + iod * np.array([side * 0.03, 0.0]), end))
    return strokes


def _mouth(face: _Face) -> list[Stroke]:
    """AU25/26: a dark band along the inner-lip midline, where lips (or, in a face whose neutral lips part, teeth)
    meet; the warp stretches it open as the lips part."""
    p = face.p
    mid = np.stack([p[60], (p[61] + p[67]) / 2, (p[62] + p[66]) / 2, (p[63] + p[65]) / 2, p[64]])
    return [Stroke(mid, face.width, "shadow", 1.0)]


LAYERS = {"brow_raise": lambda f: _forehead(f, inner=False), "inner_brow_raise": lambda f: _forehead(f, inner=True),
          "brow_lower": _glabella, "eye_narrow": _eyes, "lip_corner_pull": _nasolabial,
          "lip_corner_depress": _marionette, "jaw_open": _mouth}


def au_layers(landmarks: np.ndarray, margin: int, canvas: int, cfg, rng: np.random.Generator):
    """Per AU with a layer: its shading [canvas, canvas] at full activation (strength x the identity's depth,
    a pattern in [-1, 1] times that), and the identity's draws. `landmarks` are neutral, canonical coordinates."""
    depth = float(rng.uniform(*cfg.depth))
    face = _Face(landmarks + margin, rng, cfg.jitter, cfg.crease_width)
    layers = {}
    for name, strength in cfg.strengths().items():
        pattern = np.clip(draw(canvas, LAYERS[name](face)), -1, 1)
        layers[name] = pattern * np.float32(strength * depth)
    return layers, {"wrinkle_depth": depth}
