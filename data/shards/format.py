"""WebDataset shard sets: shard names, atomic shard writes, the manifest, shard lookup for readers.

A shard set is a folder (local, or a prefix in object storage: any data.common.storage location) of
shard-000000.tar ... plus manifest.json, each file written whole. The manifest records the packing config
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

from data.common.checksums import sha256_file
from data.common.errors import DataError
from data.common.storage import file_sizes, join, read_bytes, size, staged, write_json

MANIFEST = "manifest.json"
FORMAT = "spotmae-shards/1"
DEFAULT_SHARDS = "runs/shards/synthetic"  # where `python -m data pack` writes and the pretraining loader reads


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def fingerprint(obj) -> str:
    """A short stable hash of JSON-able data (the packing plan), to tell shard sets apart."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def write_shard(path, samples) -> dict:
    """Write samples (dicts: __key__ plus extension -> bytes) to a tar atomically; return its record.

    The WebDataset layout: members KEY.EXT, a sample's members adjacent. Written with tarfile rather than
    webdataset.TarWriter because importing webdataset imports torch (~4 s in every pool process). The tar
    is built in a local temp file, then renamed or uploaded whole (storage.staged).
    """
    count = 0
    with staged(path, ".tar") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                _add_sample(tar, sample)
                count += 1
        record = {"clips": count, "bytes": tmp.stat().st_size, "sha256": sha256_file(tmp)}
    return record


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


def done_path(shard_dir, index: int):
    return join(shard_dir, "done", shard_name(index).replace(".tar", ".json"))


def write_done(shard_dir, index: int, record: dict) -> None:
    write_json(done_path(shard_dir, index), record)


def read_done(shard_dir, index: int) -> dict | None:
    """The done record of a finished shard, or None when the shard is unfinished (or its tar has changed)."""
    try:
        record = json.loads(read_bytes(done_path(shard_dir, index)))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None  # a record is written atomically, so this is damage: rebuild the shard
    return record if size(join(shard_dir, shard_name(index))) == record.get("bytes") else None


def read_manifest(shard_dir) -> dict | None:
    path = join(shard_dir, MANIFEST)
    try:
        manifest = json.loads(read_bytes(path))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise DataError(f"manifest is not valid JSON ({e})", path=path,
                        fix="restore it or re-pack into a new folder") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"not a {FORMAT} manifest", path=path, field="format",
                        fix="point at a folder written by `python -m data pack`")
    return manifest


def write_manifest(shard_dir, manifest: dict):
    path = join(shard_dir, MANIFEST)
    write_json(path, manifest)
    return path


def shard_urls(shard_dir, require_complete: bool = True, manifest: dict | None = None) -> list[str]:
    """Paths (or URLs) of the finished shards of a shard set, in index order, checked to exist with the
    recorded size (one listing of the folder, not one request per shard). `manifest`: the set's manifest when
    the caller has read it already (remote, with many sources, it is tens of MB)."""
    manifest = manifest or read_manifest(shard_dir)
    if manifest is None:
        raise DataError("no manifest.json in the shard folder", path=shard_dir,
                        fix="pack shards first: python -m data pack --config configs/data/pack_synthetic.yaml")
    if require_complete and not manifest.get("complete"):
        raise DataError(f"shard set is incomplete ({len(manifest['shards'])} of {manifest['num_shards']} shards)",
                        path=join(shard_dir, MANIFEST), field="complete",
                        fix="re-run the same pack command to finish it")
    names = sorted(manifest["shards"])
    found = file_sizes(shard_dir, names)
    for name in names:
        recorded = (manifest["shards"][name] or {}).get("bytes")
        if found[name] is None:
            raise DataError("shard listed in the manifest is missing", path=join(shard_dir, name),
                            fix="restore the file or re-pack into a new folder")
        if recorded is not None and found[name] != recorded:
            raise DataError(f"shard has {found[name]} bytes, the manifest records {recorded}",
                            path=join(shard_dir, name), field="bytes",
                            fix="restore the file or re-pack into a new folder")
    return [str(join(shard_dir, name)) for name in names]


def verify_shards(shard_dir) -> list[str]:
    """Names of shards whose size or sha256 differs from the manifest (empty when all are intact)."""
    manifest = read_manifest(shard_dir) or {"shards": {}}
    bad = []
    for name, record in sorted(manifest["shards"].items()):
        path = join(shard_dir, name)
        if size(path) != record["bytes"] or sha256_file(path) != record["sha256"]:
            bad.append(name)
    return bad
