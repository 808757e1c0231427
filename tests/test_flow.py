"""data/flow/regions.py and data/flow/cli.py: flow methods, strain, head motion, eye masking, region curves, caching."""
import json

import cv2
import numpy as np
import pytest

from data.common.errors import ConfigError, DataError
from data.faces import landmarks as lmk
from data.flow import cli as flow_cli
from data.flow import curves
from data.flow import regions as fl


@pytest.fixture(scope="module")
def face_grey(aligned_face_landmarks):
    from skimage import data as skdata

    image = skdata.astronaut()
    crop = cv2.warpAffine(image, lmk.similarity_to_canonical(lmk.face_landmarks(image)), (160, 160))
    return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize("method", fl.METHODS)
def test_flow_methods_recover_a_subpixel_shift(face_grey, method):
    shift = (1.5, -0.75)
    moved = cv2.warpAffine(face_grey, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (160, 160),
                           flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    flow = fl.make_flow(method)(face_grey, moved)
    assert flow.shape == (160, 160, 2) and flow.dtype == np.float32
    inner = flow[30:130, 30:130].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), shift, atol=0.15)


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="method"):
        fl.make_flow("lucas-kanade")


def test_k_from_duration_gives_the_published_values():
    # CAS(ME)^2 at 30 fps: micro 6, macro 18; SAMM-LV at 200 fps: micro 37, macro 174.
    assert [fl.k_from_duration(30, 0.37), fl.k_from_duration(30, 1.2)] == [6, 18]
    assert [fl.k_from_duration(200, 0.37), fl.k_from_duration(200, 1.74)] == [37, 174]
    assert fl.k_from_duration(30, 0.001) == 1


def test_optical_strain_of_a_linear_field_is_exact():
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float64)
    a, b, c = 0.02, -0.03, 0.04  # u = a x + c y / 2, v = b y + c x / 2: e_xx = a, e_yy = b, e_xy = c / 2
    flow = np.stack([a * xx + 0.5 * c * yy, b * yy + 0.5 * c * xx], axis=-1)
    strain = fl.optical_strain(flow)
    np.testing.assert_allclose(strain, np.sqrt(a ** 2 + b ** 2 + 2 * (c / 2) ** 2), rtol=1e-9)
    # A pure translation has no strain.
    assert np.allclose(fl.optical_strain(np.full((20, 20, 2), 3.0)), 0.0)


def test_head_motion_removed_and_eyeballs_masked(aligned_face_landmarks):
    geometry = fl.RegionGeometry.from_landmarks(aligned_face_landmarks, (160, 160))
    flow = np.zeros((160, 160, 2), np.float32)
    flow[...] = (2.0, -1.0)  # rigid head shift everywhere
    blink = fl.eye_mask((160, 160), lmk.eye_polygons(aligned_face_landmarks), dilate=0)
    flow[blink] += (0.0, 5.0)  # lids closing: only inside the eye outlines
    values = fl.region_values(flow, geometry)
    assert values.shape == (len(fl.FEATURES), len(fl.REGIONS))
    np.testing.assert_allclose(values, 0.0, atol=1e-5)

    mouth_box = lmk.region_boxes(aligned_face_landmarks, (160, 160))["mouth"]
    flow[mouth_box[1] + 5:mouth_box[3] - 5, mouth_box[0] + 5:mouth_box[2] - 5] += (0.0, 1.0)
    values = fl.region_values(flow, geometry)
    mouth = fl.REGIONS.index("mouth")
    assert values[0, mouth] > 0.3 and values[1, mouth] > 0  # strain at the edges of the moving patch
    assert values[2, mouth] >= values[0, mouth]  # the top-10% mean is never below the mean
    assert np.delete(values[0], mouth).max() < 1e-5


def test_affine_head_model_removes_rotation_that_the_nose_mean_leaves(aligned_face_landmarks):
    geometry = fl.RegionGeometry.from_landmarks(aligned_face_landmarks, (160, 160))
    yy, xx = np.mgrid[0:160, 0:160].astype(np.float32)
    angle, zoom = np.deg2rad(1.5), 0.01  # a small head roll and approach about the image centre
    flow = np.stack([-angle * (yy - 80) + zoom * (xx - 80), angle * (xx - 80) + zoom * (yy - 80)], -1) + 0.7
    affine = fl.region_values(flow, geometry, "affine")
    mean = fl.region_values(flow, geometry, "mean")
    assert affine[0].max() < 1e-3
    assert mean[0].min() > 0.3  # the translation-only correction leaves ~1 px at brows and mouth
    with pytest.raises(ConfigError, match="head"):
        fl.remove_head_motion(flow, geometry.rigid, "projective")


def test_regions_exclude_eyes_and_reference_is_nose(aligned_face_landmarks):
    geometry = fl.RegionGeometry.from_landmarks(aligned_face_landmarks, (160, 160))
    eyes = fl.eye_mask((160, 160), lmk.eye_polygons(aligned_face_landmarks), dilate=0)
    for name in fl.REGIONS:
        assert geometry.regions[name].any() and not (geometry.regions[name] & eyes).any(), name
    nose_y, nose_x = np.argwhere(geometry.nose).mean(0)
    assert abs(nose_x - aligned_face_landmarks[28, 0]) < 2 and abs(nose_y - aligned_face_landmarks[28, 1]) < 2
    half = fl.RegionGeometry.from_landmarks(aligned_face_landmarks, (80, 80), scale=0.5)
    assert abs(int(half.regions["mouth"].sum()) * 4 - int(geometry.regions["mouth"].sum())) < 0.1 * \
        geometry.regions["mouth"].sum()


def test_region_curves_localise_a_smile_despite_head_drift(tmp_path, face_clip_factory, aligned_face_landmarks):
    path = face_clip_factory(tmp_path / "smile.mp4", 60, [(20, 34, "mouth", 3.0)], head=(0.15, 0.05), noise=1.5)
    grey, fps = fl.read_grey(path)
    assert grey.shape == (60, 160, 160) and fps == pytest.approx(30.0)
    geometry = fl.RegionGeometry.from_landmarks(aligned_face_landmarks, (160, 160))
    curves = fl.region_curves(grey, 6, geometry, fl.make_flow("dis"))
    assert curves.shape == (len(fl.FEATURES), 60, 3) and np.all(curves[:, 54:] == 0)
    magnitude = curves[0]
    mouth, brows = fl.REGIONS.index("mouth"), fl.REGIONS.index("brows")
    peak = int(np.argmax(magnitude[:, mouth]))
    assert 14 <= peak <= 34  # the pair (peak, peak + 6) overlaps the event
    assert magnitude[peak, mouth] > 4 * np.median(magnitude[:, mouth])
    # Head drift (0.16 px/frame) is removed: the still brows stay near the noise floor.
    assert magnitude[:54, brows].max() < 0.5 * magnitude[peak, mouth]


def test_per_frame_landmarks_match_fixed_ones(tmp_path, face_clip_factory, aligned_face_landmarks):
    path = face_clip_factory(tmp_path / "clip.mp4", 20, [(5, 12, "brows", 3.0)])
    fixed = curves.video_curves(path, tmp_path / "fixed.npz", [4], landmarks=aligned_face_landmarks)
    tracked = curves.video_curves(path, tmp_path / "tracked.npz", [4],
                                    landmarks=np.repeat(aligned_face_landmarks[None], 20, axis=0))
    np.testing.assert_allclose(fixed["curves"][4], tracked["curves"][4], rtol=1e-5)
    with pytest.raises(DataError, match="landmarks"):
        curves.video_curves(path, tmp_path / "bad.npz", [4], landmarks=np.zeros((3, 68, 2)))


def test_canonical_landmarks_sit_on_the_canonical_points():
    points = fl.canonical_landmarks(160)
    assert points.shape == (68, 2)
    assert np.abs(lmk.anchor_points(points) - lmk.canonical_points(160)).max() < 8


def test_flow_cli_writes_npz_and_skips_finished_videos(tmp_path, face_clip_factory, monkeypatch, capsys):
    videos = tmp_path / "videos"
    face_clip_factory(videos / "a.mp4", 24, [(6, 14, "mouth", 2.0)])
    face_clip_factory(videos / "b.mp4", 24, [])
    out = tmp_path / "flow"
    assert flow_cli.main([str(videos), "--out", str(out), "--k", "3", "6"]) == 0
    with np.load(out / "a.npz") as z:
        assert list(z["ks"]) == [3, 6] and json.loads(str(z["params"]))["method"] == "dis"
        assert z["k3"].shape == z["k6"].shape == (len(fl.FEATURES), 24, 3)
        assert list(z["regions"]) == list(fl.REGIONS) and int(z["num_frames"]) == 24
    stamp = (out / "a.npz").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("finished video recomputed")

    monkeypatch.setattr(fl, "region_curves", fail)
    assert flow_cli.main([str(videos), "--out", str(out), "--k", "3", "6"]) == 0
    assert flow_cli.main([str(videos), "--out", str(out), "--k", "6"]) == 0  # a subset is there too
    assert (out / "a.npz").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    # A new gap is computed and added; the cached ones are kept.
    assert flow_cli.main([str(videos / "a.mp4"), "--out", str(out), "--k", "2"]) == 0
    with np.load(out / "a.npz") as z:
        assert list(z["ks"]) == [2, 3, 6]
    # Other parameters are other work: the cache is not reused.
    assert flow_cli.main([str(videos / "a.mp4"), "--out", str(out), "--k", "4", "--method", "farneback"]) == 0
    with np.load(out / "a.npz") as z:
        assert json.loads(str(z["params"]))["method"] == "farneback" and list(z["ks"]) == [4]


def test_flow_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        flow_cli.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos"):
        flow_cli.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    (tmp_path / "empty" / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="junk.mp4"):
        flow_cli.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--k", "2"])
    with pytest.raises(DataError, match="--k"):
        flow_cli.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--k", "0"])
