"""Atomic writes: a temp file in the target folder, then rename, so a crash never leaves half a file. Plus the
reader of what write_json writes."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path

from data.common.errors import DataError


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the work, with IsADirectoryError
        raise DataError("is a folder; a file was to be written here", path=path, fix="pass a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def stale_temps(path, suffix: str | None = None) -> list[Path]:
    """Temp files that atomic_path(path, suffix) left behind when its process was killed before cleaning up
    (SIGKILL, power loss): safe to delete once no process is writing `path`."""
    path = Path(path)
    suffix = suffix or path.suffix or ".tmp"
    pattern = f".{glob.escape(path.name)}.*{glob.escape(suffix)}"
    return sorted(p for p in path.parent.glob(pattern) if p.is_file())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path, fix: str = "restore or rewrite the file"):
    """The JSON in `path`; a file that does not parse is a DataError naming it (and `fix`)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})", path=path, fix=fix) from None
