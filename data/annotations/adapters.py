"""Dataset annotation files -> the interval table (DESIGN.md §3).

`load_annotations(path, format=None)` returns subject,video,onset,apex,offset,type,emotion with
0-based inclusive integer frames and type macro|micro. One module per format: casme2.load_casme2
(CAS(ME)^2code_final.xlsx), samm.load_samm (SAMM_LongVideos_V*_Release.xlsx), casme3.load_casme3
(CAS(ME)^3 part A .xls) and csv_table.load_csv (the interval table itself, or a friendlier CSV);
what they share (cells, rows, frame intervals) is in reading.py.

A malformed file raises DataError naming the file, the row as a spreadsheet shows it (first
row = 1; for CSV the header is line 1), the column, and the fix. Repairs of known quirks of the
real files (missing offsets, missing apexes, fractional frames) are logged as warnings with
their counts.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from data.annotations.casme2 import load_casme2
from data.annotations.casme3 import load_casme3
from data.annotations.csv_table import load_csv
from data.annotations.samm import load_samm
from data.common.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["FORMATS", "LOADERS", "guess_format", "load_annotations", "load_casme2", "load_casme3", "load_csv",
           "load_samm"]

# Each reader returns 0-based frames; those of the published datasets count from their 1-based file numbers.
LOADERS = {"casme2": load_casme2, "samm": load_samm, "casme3": load_casme3, "csv": load_csv}
FORMATS = tuple(LOADERS)


def guess_format(path) -> str:
    name = Path(path).name.lower()
    if "code_final" in name and name.endswith((".xlsx", ".xls")):
        return "casme2"
    if name.startswith("samm") and name.endswith((".xlsx", ".xls")):
        return "samm"
    if name.endswith(".xls"):
        return "casme3"
    if name.endswith(".csv"):
        return "csv"
    raise DataError("cannot tell the annotation format from the file name", path=path, field="format",
                    fix=f"pass format= one of {FORMATS} (CLI: --format)")


def load_annotations(path, format: str | None = None, frames_root=None) -> pd.DataFrame:
    """Read any supported annotation file into the interval table (format guessed when None)."""
    fmt = format or guess_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown annotation format {fmt!r}", path=path, field="format", fix=f"use one of {FORMATS}")
    if fmt == "casme3":
        if frames_root is None:
            log.warning("%s: no frames_root: assuming gap-free 1-based frame numbers", path)
        return load_casme3(path, frames_root=frames_root)
    if frames_root is not None:
        log.warning("frames_root is only used by the casme3 format; ignored for %s", fmt)
    return LOADERS[fmt](path)
