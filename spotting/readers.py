"""Readers: what turns a video's channels into typed intervals. A spotting config names one (`reader:`), a spotter
folder holds one fitted reader, and `python -m spotting spot` loads whichever it finds.

Every reader has the same face: `READS` (the channel sets it can read), `FILE` (its file in a spotter folder),
`channel_sets` (what a fitted one reads), `spot_item`, `predict`, `curves` (per-frame score of each type, for
plots and the curves file), `save(folder)` and `load(folder)`.
"""
from __future__ import annotations

from pathlib import Path

from spotting.detector.reader import DetectorReader
from spotting.logistic import LogisticReader

READERS = {"detector": DetectorReader, "logistic": LogisticReader}


def fitted_reader(folder) -> tuple[object, str] | None:
    """(the fitted reader in a spotter folder, its name), or None when the folder holds none."""
    for name, cls in READERS.items():
        if (Path(folder) / cls.FILE).is_file():
            return cls.load(folder), name
    return None
