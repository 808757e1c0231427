"""Time courses for one synthetic video: expression events, blinks, talking, head motion, illumination.

Everything is drawn in seconds and then sampled at the frame rate, so one seed gives the same schedule at 30 and
200 fps. Ground-truth frames are 0-based and inclusive; the amplitude is 0 at onset and offset and peaks at apex.
"""
from __future__ import annotations

import math

import numpy as np

from data.common.errors import ConfigError
from data.synthetic.config import MICRO_MAX_S
from data.synthetic.faces import ACTION_UNITS, AU_INDEX, AU_REGIONS

# Emotion label -> AU weights (the deformation pattern it is tied to).
# Thin structures (lids, lips) get small weights: their fields are steep, and a macro amplitude at weight 1 would
# fold the warp (displacement gradient > 1).
EMOTION_AUS = {
    "happiness": {"lip_corner_pull": 1.0, "eye_narrow": 0.3},
    "surprise": {"brow_raise": 1.0},
    "anger": {"brow_lower": 1.0, "lip_press": 0.35},
    "disgust": {"brow_lower": 0.6, "eye_narrow": 0.4},
    "sadness": {"inner_brow_raise": 1.0, "lip_corner_depress": 0.7},
}


def event_regions(aus: dict[str, float]) -> list[str]:
    return sorted({r for name in aus for r in AU_REGIONS[name]})


def rise_decay(onset: int, apex: int, offset: int, num_frames: int) -> np.ndarray:
    """Amplitude per frame: raised-cosine rise from 0 at onset to 1 at apex, back to 0 at offset."""
    curve = np.zeros(num_frames, np.float32)
    t = np.arange(onset, offset + 1, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(np.pi * (t - onset) / max(apex - onset, 1))
    fall = 0.5 + 0.5 * np.cos(np.pi * (t - apex) / max(offset - apex, 1))
    curve[onset:offset + 1] = np.where(t <= apex, rise, fall)
    return curve


def _frames(start_s: float, dur_s: float, fps: float, apex_frac: float, max_frames: int | None = None):
    """(onset, apex, offset) frames of an interval; apex strictly inside when it lasts >= 3 frames."""
    n = max(3, int(round(dur_s * fps)))
    if max_frames is not None:
        n = min(n, max_frames)
    onset = int(round(start_s * fps))
    offset = onset + n - 1
    apex = min(max(onset + int(round(apex_frac * (n - 1))), onset + 1), offset - 1)
    return onset, apex, offset


def _overlaps(a0: float, a1: float, spans, gap: float) -> bool:
    return any(a0 < b1 + gap and b0 < a1 + gap for b0, b1 in spans)


def _place(rng, dur: float, total: float, edge: float, taken, gap: float, tries: int = 400):
    """A start time for an interval of `dur` s that keeps `gap` s from every taken span, or None."""
    hi = total - edge - dur
    if hi <= edge:
        return None
    for _ in range(tries):
        start = rng.uniform(edge, hi)
        if not _overlaps(start, start + dur, taken, gap):
            return start
    return None


def schedule_events(rng: np.random.Generator, cfg) -> list[dict]:
    """Non-overlapping macro and micro events, each with its emotion, AU weights, amplitude and frames."""
    ev = cfg.events
    kinds = ["macro"] * int(rng.integers(ev.macro_per_video[0], ev.macro_per_video[1] + 1))
    kinds += ["micro"] * int(rng.integers(ev.micro_per_video[0], ev.micro_per_video[1] + 1))
    micro_max = int(math.floor(MICRO_MAX_S * cfg.fps + 1e-9))
    taken, events = [], []
    for kind in kinds:  # macro first: the long ones are the hard ones to fit
        dur = rng.uniform(*(ev.macro_duration_s if kind == "macro" else ev.micro_duration_s))
        start = _place(rng, dur, cfg.duration_s, ev.edge_s, taken, ev.min_gap_s)
        if start is None:
            raise ConfigError(f"could not fit a {dur:.2f} s {kind} event into a {cfg.duration_s} s video",
                              field="duration_s", fix="raise duration_s or lower events.*_per_video")
        taken.append((start, start + dur))
        emotion = str(rng.choice(ev.emotions))
        amp = rng.uniform(*(ev.macro_amplitude if kind == "macro" else ev.micro_amplitude))
        # Each event's AU mix varies a little so one emotion is not one fixed image.
        aus = {name: float(w * rng.uniform(0.8, 1.2)) for name, w in EMOTION_AUS[emotion].items()}
        onset, apex, offset = _frames(start, dur, cfg.fps, rng.uniform(*ev.apex_fraction),
                                      micro_max if kind == "micro" else None)
        events.append({"type": kind, "emotion": emotion, "onset": onset, "apex": apex, "offset": offset,
                       "start_s": float(start), "duration_s": float(dur), "amplitude_iod": float(amp),
                       "action_units": aus, "regions": event_regions(aus)})
    return sorted(events, key=lambda e: e["onset"])


def _busy_spans(events: list[dict], region: str, fps: float) -> list[tuple[float, float]]:
    return [(e["onset"] / fps, (e["offset"] + 1) / fps) for e in events if region in e["regions"]]


def _place_required(rng, dur: float, shortest: float, total: float, edge: float, taken, gap: float, what: str):
    """Like _place, shortening the interval down to `shortest` before giving up with a config error."""
    while True:
        start = _place(rng, dur, total, edge, taken, gap, tries=100)
        if start is not None:
            return start, dur
        if dur <= shortest:
            raise ConfigError(f"no room left for a {what} in a {total} s video", field="duration_s",
                              fix=f"raise duration_s, or lower the events per video or the {what} minimum count")
        dur = max(shortest, dur / 2)


def schedule_blinks(rng, cfg, events: list[dict]) -> list[dict]:
    """Blinks at a random rate, never during an event that moves the eyes or brows (their own region)."""
    bc = cfg.blinks
    busy = _busy_spans(events, "eyes", cfg.fps) + _busy_spans(events, "brows", cfg.fps)
    wanted = max(bc.min_count, int(rng.poisson(rng.uniform(*bc.per_minute) * cfg.duration_s / 60.0)))
    pad = max(0.0, bc.min_interval_s - 0.1)  # earlier blinks are widened so blinks keep min_interval_s apart
    taken, blinks = [], []
    for i in range(wanted):
        dur = rng.uniform(*bc.duration_s)
        if i < bc.min_count:
            start, dur = _place_required(rng, dur, bc.duration_s[0], cfg.duration_s, 0.1, busy + taken, 0.1, "blink")
        else:
            start = _place(rng, dur, cfg.duration_s, 0.1, busy + taken, 0.1, tries=100)
            if start is None:
                continue
        taken.append((start - pad, start + dur + pad))
        onset, apex, offset = _frames(start, dur, cfg.fps, rng.uniform(0.3, 0.45))
        blinks.append({"onset": onset, "apex": apex, "offset": offset, "closure": float(rng.uniform(*bc.closure))})
    return sorted(blinks, key=lambda b: b["onset"])


def schedule_talking(rng, cfg, events: list[dict]) -> list[dict]:
    """Talking-like jaw oscillation segments, kept away from events in the mouth region."""
    tc = cfg.talking
    busy = _busy_spans(events, "mouth", cfg.fps)
    count = max(tc.min_count, int(rng.integers(tc.segments_per_video[0], tc.segments_per_video[1] + 1)))
    taken, segments = [], []
    for i in range(count):
        dur = rng.uniform(*tc.duration_s)
        if i < tc.min_count:
            start, dur = _place_required(rng, dur, 0.5, cfg.duration_s, 0.2, busy + taken, 0.3, "talking segment")
        else:
            start = _place(rng, dur, cfg.duration_s, 0.2, busy + taken, 0.3)
            if start is None:
                continue
        taken.append((start, start + dur))
        segments.append({"start_s": float(start), "end_s": float(start + dur),
                         "start": int(round(start * cfg.fps)), "end": int(round((start + dur) * cfg.fps)),
                         "syllables_hz": float(rng.uniform(*tc.syllables_hz)),
                         "amplitude_iod": float(rng.uniform(*tc.amplitude)), "phase": float(rng.uniform(0, 2 * np.pi))})
    return sorted(segments, key=lambda s: s["start"])


def talking_curve(segments: list[dict], times: np.ndarray) -> np.ndarray:
    """Jaw opening >= 0: syllable-rate oscillation with a wobbling rate, under a smooth 0.15 s envelope."""
    out = np.zeros(len(times), np.float64)
    for s in segments:
        inside = (times >= s["start_s"]) & (times <= s["end_s"])
        t = times[inside] - s["start_s"]
        ramp = np.minimum(1.0, np.minimum(t, s["end_s"] - s["start_s"] - t) / 0.15)
        envelope = 0.5 - 0.5 * np.cos(np.pi * np.clip(ramp, 0, 1))
        phase = 2 * np.pi * s["syllables_hz"] * t + 0.8 * np.sin(2 * np.pi * 0.7 * t) + s["phase"]
        out[inside] += s["amplitude_iod"] * envelope * (0.5 - 0.5 * np.cos(phase))
    return out.astype(np.float32)


def smooth_noise(rng, times: np.ndarray, period_s: float, count: int = 4) -> np.ndarray:
    """Zero-mean drift in [-1, 1]: a few sinusoids with periods around `period_s`, random phases."""
    periods = period_s * np.exp(rng.uniform(-0.7, 0.7, count))
    phases = rng.uniform(0, 2 * np.pi, count)
    weights = rng.uniform(0.5, 1.0, count)
    wave = (weights[:, None] * np.sin(2 * np.pi * times[None] / periods[:, None] + phases[:, None])).sum(0)
    return wave / weights.sum()


def head_motion(rng, cfg, times: np.ndarray, events: list[dict]) -> dict[str, np.ndarray]:
    """Per-frame rigid pose: tx, ty (px), rotation (deg), scale. Slow drift plus occasional quick moves.

    Quick moves may come close to an expression event but never overlap it: a 3-degree head turn inside a
    4-frame micro-expression would make its ground truth unverifiable, even by eye.
    """
    avoid = [(e["onset"] / cfg.fps, (e["offset"] + 1) / cfg.fps) for e in events]
    hc = cfg.head
    px = cfg.size / 160.0
    pose = {
        "tx": hc.drift_px * px * smooth_noise(rng, times, hc.drift_period_s),
        "ty": hc.drift_px * px * smooth_noise(rng, times, hc.drift_period_s),
        "rot_deg": hc.drift_deg * smooth_noise(rng, times, hc.drift_period_s),
        "scale": 1.0 + hc.drift_scale * smooth_noise(rng, times, hc.drift_period_s),
    }
    count = max(hc.min_moves, int(rng.poisson(rng.uniform(*hc.moves_per_minute) * cfg.duration_s / 60.0)))
    starts = []
    for i in range(count):
        dur = rng.uniform(*hc.move_duration_s)
        if i < hc.min_moves:
            start, dur = _place_required(rng, dur, hc.move_duration_s[0], cfg.duration_s, 0.2, avoid, 0.1,
                                         "quick head move")
        else:
            start = _place(rng, dur, cfg.duration_s, 0.2, avoid, 0.1, tries=100)
            if start is None:
                continue
        starts.append((start, dur))
    moves = []
    offset = np.zeros(3)
    for start, dur in sorted(starts):
        # A new pose offset; pulling the old one halfway back keeps the head from wandering off.
        step = np.array([rng.uniform(*hc.move_px) * px * rng.choice([-1, 1]),
                         rng.uniform(*hc.move_px) * px * rng.choice([-1, 1]),
                         rng.uniform(*hc.move_deg) * rng.choice([-1, 1])]) - 0.5 * offset
        ramp = np.clip((times - start) / dur, 0, 1)
        ramp = ramp * ramp * (3 - 2 * ramp)
        for key, value in zip(("tx", "ty", "rot_deg"), step):
            pose[key] = pose[key] + value * ramp
        offset += step
        moves.append({"start_s": float(start), "duration_s": float(dur),
                      "tx": float(step[0]), "ty": float(step[1]), "rot_deg": float(step[2])})
    pose = {k: v.astype(np.float32) for k, v in pose.items()}
    return {**pose, "moves": moves}


def illumination(rng, cfg, times: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame gain and a linear gradient (gx, gy per half-frame), all smooth in time."""
    lc = cfg.light
    return {
        "gain": (1.0 + lc.gain_drift * smooth_noise(rng, times, lc.period_s)).astype(np.float32),
        "gx": (lc.gradient_drift * smooth_noise(rng, times, lc.period_s)).astype(np.float32),
        "gy": (lc.gradient_drift * smooth_noise(rng, times, lc.period_s)).astype(np.float32),
    }


def au_curves(events, blinks, talking, times: np.ndarray) -> np.ndarray:
    """Amplitude [T, K] of every action unit per frame (IOD units; blink in closure units)."""
    n = len(times)
    curves = np.zeros((n, len(ACTION_UNITS)), np.float32)
    for e in events:
        shape = rise_decay(e["onset"], e["apex"], e["offset"], n)
        for name, weight in e["action_units"].items():
            curves[:, AU_INDEX[name]] += e["amplitude_iod"] * weight * shape
    for b in blinks:
        curves[:, AU_INDEX["blink"]] += b["closure"] * rise_decay(b["onset"], b["apex"], b["offset"], n)
    curves[:, AU_INDEX["jaw_open"]] += talking_curve(talking, times)
    return curves


def appearance_weights(curves: np.ndarray, full_at_iod: float) -> np.ndarray:
    """[T, K] in [0, 1]: how far each AU's appearance layer is drawn in, from its activation curve.

    Linear in the activation, so a layer rises and falls with the warp (onset-apex-offset) and a micro event's
    lines are faint; full at the activation a macro event of amplitude `full_at_iod` gives the AU (its largest
    emotion weight; the jaw's talking amplitude and the blink's closure directly).
    """
    weight = {name: max((aus[name] for aus in EMOTION_AUS.values() if name in aus), default=1.0)
              for name in ACTION_UNITS}
    full = np.array([full_at_iod * weight[name] for name in ACTION_UNITS], np.float32)
    return np.clip(curves / full, 0, 1).astype(np.float32)
