"""Commit markers for checkpoints: each rank lists what it wrote; a restore trusts only complete checkpoints.

Ray Train registers a checkpoint only after every rank has uploaded its folder, but the upload itself copies
files straight into <storage>/<run>/checkpoint_*/ (pyarrow copy_files, no temp-and-rename). A crash during
the copy can leave a partial folder on storage. So each rank writes, last, commit_rank_<r>.json listing every
file of its shard with its size; a checkpoint is complete when all ranks' markers are there and every listed
file has its size. Checking sizes (not hashes) keeps the check cheap on multi-GB ZeRO shards.

On restore the newest complete checkpoint folder of the run wins, registered by Ray or not: Ray registers a
checkpoint only when its controller next polls the workers, so a worker killed just after a fully written
checkpoint would otherwise restart from the one before it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from data.common.atomic import write_json
from data.common.storage import is_url

log = logging.getLogger(__name__)

MARKER_PREFIX = "commit_rank_"


def marker_name(rank: int) -> str:
    return f"{MARKER_PREFIX}{rank:04d}.json"


def write_marker(folder, rank: int, world_size: int, step: int) -> Path:
    """List every file under `folder` (this rank's shard, before upload) with its size, in a marker file."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
             if p.is_file() and not p.name.startswith(MARKER_PREFIX)}
    path = folder / marker_name(rank)
    write_json(path, {"rank": rank, "world_size": world_size, "step": step, "files": files})
    return path


def problems(folder) -> list[str]:
    """What makes the checkpoint in `folder` incomplete; [] when it is complete."""
    folder = Path(folder)
    markers = sorted(folder.glob(f"{MARKER_PREFIX}*.json"))
    if not markers:
        return ["no commit marker (half-written, or written before markers existed)"]
    found = []
    world = None
    seen = set()
    for marker in markers:
        try:
            record = json.loads(marker.read_text())
        except (OSError, ValueError) as e:
            found.append(f"{marker.name} unreadable: {e}")
            continue
        world, seen = record["world_size"], seen | {record["rank"]}
        for name, size in record["files"].items():
            path = folder / name
            if not path.is_file():
                found.append(f"{name} missing")
            elif path.stat().st_size != size:
                found.append(f"{name} has {path.stat().st_size} bytes, {size} were written")
    if world is not None and seen != set(range(world)):
        found.append(f"markers of ranks {sorted(set(range(world)) - seen)} missing")
    return found


def saved_world_size(folder) -> int:
    """The number of ranks that wrote a complete checkpoint (its commit markers say; see problems())."""
    marker = next(Path(folder).glob(f"{MARKER_PREFIX}*.json"))
    return int(json.loads(marker.read_text())["world_size"])


def step_of(name: str) -> int:
    """checkpoint_step_00000012 -> 12 (-1 for other names, which then sort first)."""
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def candidates(run_dir: str, filesystem) -> list[str]:
    """The checkpoint_* folders of a run, newest step first."""
    import pyarrow.fs

    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(run_dir, allow_not_found=True))
    found = [i.path for i in infos
             if i.type == pyarrow.fs.FileType.Directory and os.path.basename(i.path).startswith("checkpoint_")]
    return sorted(found, key=lambda p: step_of(os.path.basename(p)), reverse=True)


def run_location(storage_path: str, name: str):
    """(pyarrow filesystem, path of the run folder) for a local folder or a URI such as s3://bucket/dir."""
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(storage_path if is_url(storage_path)
                                                      else os.path.abspath(storage_path))
    return filesystem, f"{root.rstrip('/')}/{name}"
