"""Where shard sets, checkpoints and outputs live: a local folder or an fsspec URL (s3://, gs://, http(s)://).

Reads go through fsspec for every location (local paths included), so a caller never asks which kind it has.
Writes keep their guarantee on both kinds: a local file is written to a temp file and renamed
(data.common.atomic); an object store has no rename, but an object written with one PUT (or one completed
multipart upload) appears whole or not at all, so a remote file is staged locally, then uploaded in one go.

Credentials and endpoints come from the standard places of each store (for S3: the AWS_* environment variables
such as AWS_ENDPOINT_URL, ~/.aws/config, instance roles), never from our configs: nothing the project writes
(configs, manifests, checkpoints, logs) carries them. Reading s3:// needs s3fs (a dependency), gs:// needs gcsfs.
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import tempfile
from pathlib import Path

from data.common.atomic import atomic_path
from data.common.atomic import write_bytes as write_local_bytes
from data.common.config import replace
from data.common.errors import ConfigError

READ_BLOCK = 8 << 20  # bytes per ranged GET when streaming a remote object (bounds each reader's memory)

# Set by Ray's job supervisor in the driver of a job started with `ray job submit`.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def is_url(location) -> bool:
    return "://" in str(location)


def join(location, *names: str):
    """`location`/name/...: a Path for a local location, a URL string for a remote one."""
    if not is_url(location):
        return Path(location).joinpath(*names)
    return posixpath.join(str(location).rstrip("/"), *names)


def filesystem(location):
    """(fsspec filesystem, path inside it) for a local path or a URL."""
    import fsspec.core

    return fsspec.core.url_to_fs(str(location))


def read_bytes(location) -> bytes:
    """The whole file; FileNotFoundError when it is not there."""
    fs, path = filesystem(location)
    fs.invalidate_cache(path)  # another process may have written it since this one listed its folder
    return fs.cat_file(path)


def size(location) -> int | None:
    """The file's size in bytes, None when it is not there."""
    fs, path = filesystem(location)
    fs.invalidate_cache(path)  # a listing cached earlier by this process may be stale
    try:
        return int(fs.size(path))
    except FileNotFoundError:
        return None


def file_sizes(folder, names) -> dict[str, int | None]:
    """Sizes of the files `names` directly in `folder` (None: missing): one listing where the store lists
    (S3, GCS, local), one query per file otherwise (an HTTP server without an index page)."""
    fs, root = filesystem(folder)
    try:
        listed = {posixpath.basename(e["name"].rstrip("/")): e.get("size")
                  for e in fs.ls(root, detail=True, refresh=True) if e.get("type") == "file"}
    except (FileNotFoundError, NotImplementedError):
        listed = {}
    return {name: listed[name] if name in listed else size(join(folder, name)) for name in names}


def open_read(location, block_size: int = READ_BLOCK):
    """A binary file object that streams the file (remote: ranged GETs of `block_size`, no local copy)."""
    fs, path = filesystem(location)
    if is_url(location):
        return fs.open(path, "rb", block_size=block_size, cache_type="readahead")
    return fs.open(path, "rb")


def write_bytes(location, data: bytes) -> None:
    """Write the file whole: atomic rename locally, one PUT remotely."""
    if not is_url(location):
        write_local_bytes(location, data)
        return
    fs, path = filesystem(location)
    fs.pipe_file(path, data)


def write_json(location, obj) -> None:
    write_bytes(location, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def staged(location, suffix: str):
    """Yield a local temp path to write; on success it becomes `location` whole (rename, or one upload)."""
    if not is_url(location):
        with atomic_path(location, suffix=suffix) as tmp:
            yield tmp
        return
    fd, tmp = tempfile.mkstemp(prefix="spotmae_upload_", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        fs, path = filesystem(location)
        fs.put_file(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def upload_folder(local, url) -> None:
    """Copy the files of local folder `local` (recursively) to remote folder `url`, one upload per file."""
    local = Path(local)
    fs, root = filesystem(url)
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(file), posixpath.join(root, *file.relative_to(local).parts))


# ---- paths handed to other processes ---------------------------------------------------------------------

def in_ray_job() -> bool:
    """True in the driver of a job started with `ray job submit`, whose working directory is a temporary copy."""
    return RAY_JOB_ENV in os.environ


def shared_location(value: str, field: str, source=None) -> str:
    """`value` as every process of a run can name it: a URL as is, a local path made absolute.

    Under `ray job submit` the job runs in a temporary copy of the submitted working directory (on the head
    node, deleted later), so a relative path there would read no shards and lose outputs: it is refused.
    """
    if not value or is_url(value):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and in_ray_job():
        raise ConfigError(f"relative path {value!r} in a job started by `ray job submit` would point into the "
                          "job's temporary copy of the working directory", path=source, field=field,
                          fix="use an absolute path on storage every node can see, or a URL such as "
                              "s3://bucket/dir")
    return str(path.resolve())


def shared_locations(cfg, fields: tuple[str, ...], source=None):
    """A copy of config `cfg` with these dotted path fields made shared_location (None/empty ones kept)."""
    changes = {}
    for field in fields:
        value = cfg
        for part in field.split("."):
            value = getattr(value, part)
        if value:
            changes[field] = shared_location(value, field, source)
    return replace(cfg, changes) if changes else cfg
