"""The synthetic generator's appearance layers: off changes nothing, on they sit where FACS puts them, follow the
warp's activation, are zero while their AU rests, are deterministic by seed; bad values are refused by name."""
import hashlib
import json

import numpy as np
import pytest
import yaml

from data.common.errors import ConfigError
from data.synthetic.config import APPEARANCE_AUS
from data.synthetic.faces import ACTION_UNITS, AU_INDEX, build_identity
from data.synthetic.generate import generate, load_synthetic_config, render_video
from data.synthetic.motion import EMOTION_AUS, appearance_weights, rise_decay
from data.synthetic.render import still_frames

TINY = ["subjects=2", "videos_per_subject=2", "duration_s=8", "events.macro_per_video=[1,1]",
        "events.micro_per_video=[1,2]", "events.macro_duration_s=[0.6,2.0]", "size=64"]
# No noise, head motion, light changes or distractors: what changes between two frames is the expression alone.
CLEAN = ["noise_sigma=[0,0]", "head.drift_px=0", "head.drift_deg=0", "head.drift_scale=0", "head.min_moves=0",
         "head.moves_per_minute=[0,0]", "light.gain_drift=0", "light.gradient_drift=0", "blinks.min_count=0",
         "blinks.per_minute=[0,0]", "talking.segments_per_video=[0,0]", "talking.min_count=0"]
ON = ["appearance.enabled=true"]
# sha256 of the rendered frames and meta of TINY videos (subject, video), made by the generator at commit 214728a,
# before the appearance option existed: with the option off the warp-only benchmark sets stay byte for byte.
WARP_ONLY_DIGESTS = {(0, 0): "e8ef56a5ff46a3c811423f70ea8cc1b1297f5c22afc07840620e561e6fc6ae6a",
                     (1, 1): "b1a5349b7cd6433d862ccd421db98f0e2e999f082bb3a49850fc29088f369e64"}


def _digest(frames: np.ndarray, meta: dict) -> str:
    h = hashlib.sha256(frames.tobytes())
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("extra", [[], ["appearance.enabled=false", "appearance.brow_raise=0.5",
                                        "appearance.depth=[0.2,0.4]"]])
def test_off_renders_what_the_generator_rendered_before(extra):
    cfg = load_synthetic_config(None, TINY + extra)
    for (subject, video), expected in WARP_ONLY_DIGESTS.items():
        frames, meta = render_video(cfg, subject, video)
        assert _digest(frames, meta) == expected, (subject, video)
        assert build_identity(cfg, subject).shading is None


def test_folder_written_before_the_option_resumes(tmp_path):
    small = ["subjects=1", "videos_per_subject=1", "duration_s=5", "size=64", "events.macro_per_video=[1,1]",
             "events.micro_per_video=[1,1]", "events.macro_duration_s=[0.6,1.0]"]
    out = generate(load_synthetic_config(None, small), tmp_path / "ds", progress=False)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["appearance"]["enabled"] is False
    del saved["appearance"]  # as a folder written before the option existed
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    video = out / "videos" / "s01_v01.mp4"
    written = video.stat().st_mtime_ns
    generate(load_synthetic_config(None, small), out, progress=False)
    assert video.stat().st_mtime_ns == written  # the same dataset: resumed, nothing rendered again
    with pytest.raises(ConfigError, match="different config.*appearance"):
        generate(load_synthetic_config(None, small + ON), out, progress=False)


def test_on_is_deterministic_by_seed_and_keeps_the_schedule():
    cfg = load_synthetic_config(None, TINY + ON)
    frames_a, meta_a = render_video(cfg, 1, 0)
    frames_b, meta_b = render_video(cfg, 1, 0)
    assert np.array_equal(frames_a, frames_b) and meta_a == meta_b
    warp_frames, warp_meta = render_video(load_synthetic_config(None, TINY), 1, 0)
    assert meta_a["events"] == warp_meta["events"] and meta_a["head"] == warp_meta["head"]
    assert not np.array_equal(frames_a, warp_frames)
    assert 0.7 <= meta_a["identity"]["wrinkle_depth"] <= 1.3
    other = build_identity(load_synthetic_config(None, TINY + ON + ["seed=5"]), 1)
    assert not np.array_equal(other.shading, build_identity(cfg, 1).shading)  # lines move with the identity


def test_layers_rest_with_their_action_unit_and_follow_its_course():
    warp_cfg = load_synthetic_config(None, TINY + CLEAN + ["size=96", "events.micro_per_video=[2,2]"])
    cfg = load_synthetic_config(None, TINY + CLEAN + ON + ["size=96", "events.micro_per_video=[2,2]"])
    for subject in range(2):
        frames, meta = render_video(cfg, subject, 0)
        warp, _ = render_video(warp_cfg, subject, 0)
        change = np.abs(frames.astype(np.float32) - warp).reshape(len(frames), -1).sum(1)
        course = sum(rise_decay(e["onset"], e["apex"], e["offset"], len(frames)) for e in meta["events"])
        for e in meta["events"]:
            seen = change[e["onset"]:e["offset"] + 1]
            assert np.corrcoef(course[e["onset"]:e["offset"] + 1], seen)[0, 1] > 0.95, e  # the warp's course
            assert abs(int(np.argmax(seen)) + e["onset"] - e["apex"]) <= 1
        assert (change[course == 0] == 0).all()  # bit-identical frames while every AU rests
        assert (change[course > 0.1] > 0).all()  # fainter than that, a layer may round away in 8 bits


def test_layer_contrast_is_linear_in_the_activation_up_to_full():
    cfg = load_synthetic_config(None, ON + ["size=96"])
    identity = build_identity(cfg, 0)
    full = cfg.appearance.full_at_iod
    levels = np.array([0.0, 0.25, 0.5, 1.0, 2.0])
    curves = np.zeros((len(levels), len(ACTION_UNITS)), np.float32)
    curves[:, AU_INDEX["brow_raise"]] = levels * full
    weights = appearance_weights(curves, full)
    assert np.allclose(weights[:, AU_INDEX["brow_raise"]], np.minimum(levels, 1))
    # Seen on the still face: the layers' own change grows with the weight; none at rest, capped past full.
    warp = still_frames(identity, curves, cfg.size).astype(np.float32)
    layered = still_frames(identity, curves, cfg.size, weights).astype(np.float32)
    own = np.abs(layered - warp).mean((1, 2, 3))
    assert own[0] == 0 and own[1] < own[2] < own[3]
    assert own[2] / own[3] == pytest.approx(0.5, abs=0.08)
    # Past full the weight stays; the change differs only as the lines ride the skin to other (e.g. hair) pixels.
    assert own[4] == pytest.approx(own[3], rel=0.2)
    # At apex, with each emotion's nominal AU weights: the strongest micro event draws a layer in to ~1/3, the
    # strongest macro one fully.
    for aus in EMOTION_AUS.values():
        apex = {kind: np.zeros((1, len(ACTION_UNITS)), np.float32) for kind in ("micro", "macro")}
        for name, weight in aus.items():
            apex["micro"][0, AU_INDEX[name]] = cfg.events.micro_amplitude[1] * weight
            apex["macro"][0, AU_INDEX[name]] = cfg.events.macro_amplitude[1] * weight
        assert appearance_weights(apex["micro"], full).max() < 0.4
        assert appearance_weights(apex["macro"], full).max() > 0.95


def test_layers_sit_where_facs_puts_them():
    cfg = load_synthetic_config(None, ON)
    identity = build_identity(cfg, 0)
    p = identity.landmarks + identity.margin
    iod = identity.iod

    def centre(name):
        weight = np.abs(identity.shading[AU_INDEX[name]])
        ys, xs = np.mgrid[0:weight.shape[0], 0:weight.shape[1]]
        return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()

    brow_top, nose_x = p[17:27, 1].min(), (p[21, 0] + p[22, 0]) / 2
    for name in ("brow_raise", "inner_brow_raise"):  # forehead lines: above the brows, centred
        x, y = centre(name)
        assert brow_top - 0.5 * iod < y < brow_top and abs(x - nose_x) < 0.1 * iod, name
    x, y = centre("brow_lower")  # furrows between the brow heads, down to the nose root
    assert p[21, 0] < x < p[22, 0] and p[21:23, 1].min() - 0.2 * iod < y < p[27, 1]
    x, y = centre("eye_narrow")  # crow's feet, lid furrows, cheeks: about eye level, both sides
    assert abs(x - nose_x) < 0.1 * iod and p[36:48, 1].mean() < y < p[33, 1]
    x, y = centre("lip_corner_pull")  # nasolabial folds: between nose wing and lip corner height
    assert p[31, 1] - 0.1 * iod < y < p[48, 1] + 0.15 * iod
    folds = np.abs(identity.shading[AU_INDEX["lip_corner_pull"]])
    lateral = folds[:, :int(p[31, 0])].sum() + folds[:, int(p[35, 0]) + 1:].sum()
    assert lateral > 0.9 * folds.sum()  # beside the nose wings, not over the nose
    x, y = centre("jaw_open")  # the mouth interior between the lips
    assert p[60, 0] < x < p[64, 0] and p[50:53, 1].min() < y < p[56:59, 1].max()
    for name in ACTION_UNITS:
        assert (np.abs(identity.shading[AU_INDEX[name]]).max() > 0) == (name in APPEARANCE_AUS), name


@pytest.mark.parametrize("override, field", [
    ("appearance.brow_raise=-0.1", "appearance.brow_raise"),
    ("appearance.jaw_open=0.9", "appearance.jaw_open"),          # x depth 1.3 would darken past black
    ("appearance.full_at_iod=0", "appearance.full_at_iod"),
    ("appearance.depth=[1.2,0.8]", "appearance.depth"),
    ("appearance.crease_width=0", "appearance.crease_width"),
    ("appearance.nose_wrinkle=0.2", "appearance.nose_wrinkle"),
])
def test_bad_appearance_values_are_refused_by_name(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_synthetic_config(None, [override])


def test_cli_plots_each_event_with_and_without_layers(tmp_path):
    from data.common.cli import run_main
    from data.synthetic.cli import main

    args = ["--config", "configs/data/synthetic_appearance.yaml", "--out", str(tmp_path / "ds"), "--plot", "s01_v01",
            "--no-progress", "size=96", "subjects=1", "videos_per_subject=1", "duration_s=8",
            "events.macro_per_video=[1,1]", "events.micro_per_video=[1,1]", "events.macro_duration_s=[0.6,2.0]",
            "talking.segments_per_video=[1,1]"]
    assert run_main(main, args) == 0
    for name in ("s01_v01_regions.png", "s01_v01_appearance.png"):
        png = tmp_path / "ds" / "plots" / name
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    saved = load_synthetic_config(tmp_path / "ds" / "config.yaml")
    assert saved.appearance.enabled and saved.seed == 1 and saved.subjects == 1
