"""What every release folder shares: it is built beside its destination and renamed into place, it ends with
release.json (written last: the export finished), and it can be pushed to the Hub.

An encoder release (launch.release) records the sha256 of its weights; a spotter release (launch.spotter_release)
records the size and sha256 of every file. `is_complete` checks either, so a rerun keeps a finished release and
redoes a damaged or half-written one.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from data.common.checksums import matches, sha256_file
from data.common.errors import ConfigError, DataError

log = logging.getLogger(__name__)

MANIFEST = "release.json"


def is_complete(folder) -> bool:
    """True when release.json exists and every file it records still holds what was written."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if "files" in manifest:
            return all(matches(folder / name, record) for name, record in manifest["files"].items())
        return sha256_file(folder / "model.safetensors") == manifest["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def check_out(out: Path) -> None:
    """A non-empty --out that is no release folder would be deleted by the rename: refused."""
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise DataError(f"exists and is not a release folder (no {MANIFEST}); replacing it would delete it",
                        path=out, field="--out", fix="choose a new or empty --out folder")


def partial_folder(out: Path) -> Path:
    """An empty folder beside `out` to build the release in (a plain name: transformers turns the folder name
    into a Python module name when loading the code)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="release_partial_", dir=out.parent))


def make_readable(folder: Path) -> None:
    """Temp folders are created owner-only; a release is meant to be shared: use the umask's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def replace_folder(new: Path, out: Path) -> None:
    """Rename `new` onto `out`: `out` is either the old release or the new one, never a mix."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix="release_old_", dir=out.parent))
    os.replace(out, old / "previous")
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def push_folder(folder, repo_id: str, endpoint: str | None = None, private: bool = False) -> str:
    """create_repo + upload_folder with HF_TOKEN; any failure is one DataError line, the folder untouched."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ConfigError("HF_TOKEN is not set", field="HF_TOKEN",
                          fix=f"export HF_TOKEN=<a write token>; the export in {folder} is complete, re-run to push")
    from huggingface_hub import HfApi

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message="SpotMAE release", ignore_patterns=[".*"])
    except Exception as e:  # network boundary: whatever failed, say it in one line and keep the export
        reason = f"{type(e).__name__}: {e}".replace(token, "***").splitlines()[0][:300]
        raise DataError(f"push to {repo_id} at {endpoint or 'https://huggingface.co'} failed ({reason})",
                        path=folder, field="--push",
                        fix="the export is complete and unchanged; check the network and HF_TOKEN, then re-run "
                            "the same command to retry the push") from e
    url = getattr(info, "commit_url", None) or str(info)
    log.info("pushed %s to %s", folder, url)
    return url
