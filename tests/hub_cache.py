"""A local Hugging Face Hub cache laid out as huggingface_hub's downloads lay it out, without a network.

    <cache>/models--<org>--<name>/blobs/<sha256 of the file>          the file's bytes (one copy per content)
    <cache>/models--<org>--<name>/snapshots/<commit>/<path in repo>    relative symlink to its blob
    <cache>/models--<org>--<name>/refs/<revision>                      the commit that revision points at

(huggingface_hub.constants.HF_HUB_CACHE; file_download.hf_hub_download writes this layout; scan_cache_dir reads
it.) The commit id is a sha1 of the files' paths and hashes, so the same folder gives the same commit.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from data.common.checksums import sha256_file


def add_to_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """Lay `folder`'s files into `cache` as the snapshot of `repo_id` that `revision` names; returns the snapshot
    folder."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    hashes = {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}
    commit = hashlib.sha1("".join(f"{k}:{v}\n" for k, v in hashes.items()).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name, digest in hashes.items():
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(Path(folder) / name, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
