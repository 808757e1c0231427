"""Where commands write: output paths checked before any work, and output folders shared with the user's files.

A command that writes fixed names into a folder the user chose (`spotting spot --out DIR` writes DIR/<video>.csv,
...) may be pointed at a folder that already holds the user's own files of those names. `OwnedOutputs` keeps a
record in the folder (RECORD: name -> size and sha256 of each file the command wrote there) and, before any
work, refuses a name that holds a file not in the record, or changed since it was written. So a rerun replaces
the command's own earlier results, and never anything else.
"""
from __future__ import annotations

import json
from pathlib import Path

from data.common.atomic import write_json
from data.common.checksums import file_record, matches
from data.common.errors import DataError

RECORD = ".spotmae_outputs.json"


def output_file(path, field: str = "--out") -> Path:
    """An output file path, checked before any work: not an existing folder, and no file where a folder must be."""
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder; an output file was expected", path=path, field=field,
                        fix=f"pass a file name, e.g. {path / 'out.csv'}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise DataError(f"{parent} is a file, so nothing can be written below it", path=path, field=field,
                            fix="choose another output path")
    return path


def output_folder(path, field: str = "--out") -> Path:
    """An output folder path, checked before any work: absent (it is created) or a folder, never a file."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            what = "is a file" if candidate == path else f"lies below {candidate}, which is a file"
            raise DataError(f"{what}; an output folder was expected", path=path, field=field,
                            fix="pass a new or existing folder")
    return path


class OwnedOutputs:
    """The files a command will write into `folder` (by name), checked against the folder's record up front."""

    def __init__(self, folder, names, field: str = "--out"):
        self.folder = output_folder(folder, field)
        self.record = self._read_record()
        for name in names:
            path = self.folder / name
            if path.exists() and not (name in self.record and matches(path, self.record[name])):
                raise DataError("exists, and this command did not write it (or it changed since): it is never "
                                "replaced", path=path, field=field,
                                fix="pass another --out folder, or move the file away")

    def _read_record(self) -> dict:
        try:
            record = json.loads((self.folder / RECORD).read_text())
        except (OSError, ValueError):
            return {}  # no record (or a damaged one): every existing file counts as the user's
        return record if isinstance(record, dict) else {}

    def path(self, name: str) -> Path:
        return self.folder / name

    def wrote(self, name: str) -> Path:
        """Record a file just written (call right after each write, so a crash leaves at most one unrecorded)."""
        path = self.path(name)
        self.record[name] = file_record(path)
        write_json(self.folder / RECORD, self.record)
        return path
