"""WebDataset shard sets on disk: shard names, atomic shard writes, the manifest, shard lookup for readers.

A shard set is a folder of shard-000000.tar ... plus manifest.json. The manifest records the packing config
and its fingerprint, the source videos, and per shard its clip count, size and sha256. While packing, each
finished shard also gets a done record (done/shard-000000.json, written after the tar): resuming skips those
shards, and the manifest is assembled from the records at the end (not rewritten per shard: with ~10^5
sources it is tens of MB). Shards are immutable: a finished shard is never rewritten; packing again with
another config into the same folder is refused.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from data.common.atomic import atomic_path, write_json
from data.common.checksums import sha256_file
from data.common.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "spotmae-shards/1"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def fingerprint(obj) -> str:
    """A short stable hash of JSON-able data (the packing plan), to tell shard sets apart."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def write_shard(path, samples) -> dict:
    """Write samples (dicts: __key__ plus extension -> bytes) to a tar atomically; return its record.

    The WebDataset layout: members KEY.EXT, a sample's members adjacent. Written with tarfile rather than
    webdataset.TarWriter because importing webdataset imports torch (~4 s in every pool process).
    """
    path = Path(path)
    count = 0
    with atomic_path(path, suffix=".tar") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                _add_sample(tar, sample)
                count += 1
        tmp.chmod(0o644)  # mkstemp makes 0600; shards are read by other users' training jobs
    return {"clips": count, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _add_sample(tar: tarfile.TarFile, sample: dict) -> None:
    key = sample["__key__"]
    if "." in key or not key:
        raise ValueError(f"sample key {key!r} must be non-empty without dots (WebDataset splits names at dots)")
    for ext in sorted(k for k in sample if not k.startswith("__")):
        data = sample[ext]
        # mtime 0 and fixed owner: a shard's bytes depend only on its samples, so its sha256 is reproducible
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "spotmae", "spotmae"
        tar.addfile(info, io.BytesIO(data))


def done_path(shard_dir, index: int) -> Path:
    return Path(shard_dir) / "done" / shard_name(index).replace(".tar", ".json")


def write_done(shard_dir, index: int, record: dict) -> None:
    write_json(done_path(shard_dir, index), record)


def read_done(shard_dir, index: int) -> dict | None:
    """The done record of a finished shard, or None when the shard is unfinished (or its tar has changed)."""
    path = done_path(shard_dir, index)
    tar = Path(shard_dir) / shard_name(index)
    if not path.is_file() or not tar.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a record is written atomically, so this is damage: rebuild the shard
    return record if tar.stat().st_size == record.get("bytes") else None


def read_manifest(shard_dir) -> dict | None:
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"manifest is not valid JSON ({e})", path=path,
                        fix="restore it or re-pack into a new folder") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"not a {FORMAT} manifest", path=path, field="format",
                        fix="point at a folder written by `python -m data pack`")
    return manifest


def write_manifest(shard_dir, manifest: dict) -> Path:
    path = Path(shard_dir) / MANIFEST
    write_json(path, manifest)
    return path


def shard_urls(shard_dir, require_complete: bool = True) -> list[str]:
    """Paths of the finished shards of a shard set, in index order, checked to exist with the recorded size."""
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    if manifest is None:
        raise DataError("no manifest.json in the shard folder", path=shard_dir,
                        fix="pack shards first: python -m data pack --config configs/data/pack_synthetic.yaml")
    if require_complete and not manifest.get("complete"):
        raise DataError(f"shard set is incomplete ({len(manifest['shards'])} of {manifest['num_shards']} shards)",
                        path=shard_dir / MANIFEST, field="complete",
                        fix="re-run the same pack command to finish it")
    urls = []
    for name in sorted(manifest["shards"]):
        path = shard_dir / name
        if not path.is_file():
            raise DataError("shard listed in the manifest is missing", path=path,
                            fix="restore the file or re-pack into a new folder")
        urls.append(str(path))
    return urls


def verify_shards(shard_dir) -> list[str]:
    """Names of shards whose size or sha256 differs from the manifest (empty when all are intact)."""
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir) or {"shards": {}}
    bad = []
    for name, record in sorted(manifest["shards"].items()):
        path = shard_dir / name
        if not path.is_file() or path.stat().st_size != record["bytes"] or sha256_file(path) != record["sha256"]:
            bad.append(name)
    return bad
