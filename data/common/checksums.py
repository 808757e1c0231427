"""sha256 of files, and checksum records: a folder written in several files (a spotter, a command's outputs)
records what each file held when it was written, so a reader can tell a truncated, damaged or replaced file
from the one that was written, and say which file it is."""
from __future__ import annotations

import hashlib
from pathlib import Path

from data.common.errors import DataError
from data.common.storage import open_read


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """sha256 of a local file or of an object at an fsspec URL (streamed, never copied whole)."""
    digest = hashlib.sha256()
    with open_read(path) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path) -> dict:
    """{"bytes", "sha256"} of one file as it is now."""
    path = Path(path)
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def folder_record(folder, names) -> dict[str, dict]:
    """file_record of each of `names` (paths relative to `folder`, '/'-separated)."""
    return {name: file_record(Path(folder) / name) for name in names}


def matches(path, record: dict) -> bool:
    """True when the file exists and holds what `record` says (size first: cheap)."""
    path = Path(path)
    return path.is_file() and path.stat().st_size == record.get("bytes") and sha256_file(path) == record.get("sha256")


def check_folder(folder, record: dict[str, dict], fix: str) -> None:
    """DataError naming the first file of `record` that is missing or differs from what was written."""
    for name, expected in sorted(record.items()):
        path = Path(folder) / name
        if not path.is_file():
            raise DataError("file missing (it was written with the folder)", path=path, fix=fix)
        size = path.stat().st_size
        if size != expected.get("bytes"):
            raise DataError(f"is {size} bytes, {expected.get('bytes')} were written: truncated or replaced",
                            path=path, fix=fix)
        if sha256_file(path) != expected.get("sha256"):
            raise DataError("content differs from what was written (sha256 mismatch): the file is damaged",
                            path=path, fix=fix)
