"""What every annotation reader shares: workbooks read by content, rows whose errors name the cell as a
spreadsheet shows it (first row = 1; for CSV the header is line 1), and frame intervals with the repairs of
known quirks of the real files (missing offsets, missing apexes, fractional frames) counted and logged.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import xlrd

from data.common.errors import DataError
from data.common.tables import INTERVAL_COLUMNS, drop_repeats, expression_type, validate_intervals

log = logging.getLogger("data.annotations.adapters")  # one logger name for every format's repairs


def _letter(index: int) -> str:
    """Spreadsheet column letter of a 0-based column index (these sheets stay within A-Z)."""
    return chr(65 + index) if index < 26 else f"#{index + 1}"


def blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def looks_numeric(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def norm(name) -> str:
    return re.sub(r"\s+", " ", str(name)).strip().lower()


class Row:
    """One source row: typed cell access whose errors name the file, row and column."""

    def __init__(self, path, number: int, cells: dict, letters: bool = True):
        self.path, self.line, self.cells, self.letters = str(path), number, cells, letters

    def error(self, name: str, message: str, fix: str = "correct the cell") -> DataError:
        index, _ = self.cells.get(name, (None, None))
        where = f"column {_letter(index)} ({name})" if self.letters and index is not None else f"column {name!r}"
        return DataError(f"row {self.line}, {where}: {message}", path=self.path, field=name, fix=fix)

    def raw(self, name):
        value = self.cells.get(name, (None, None))[1]
        return None if blank(value) else value

    def text(self, name: str, required: bool = True) -> str:
        value = self.raw(name)
        if value is None:
            if required:
                raise self.error(name, "is empty")
            return ""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value).strip()

    def number(self, name: str, required: bool = True, integer: bool = False) -> float | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise self.error(name, "is empty", fix="fill in the frame number")
            return None
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise self.error(name, f"{value!r} is not a number", fix="frame numbers are numbers") from None
        if not math.isfinite(x) or (integer and not x.is_integer()):
            raise self.error(name, f"{value!r} is not an integer frame number", fix="frames are integers")
        return x

    def kind(self, name: str) -> str:
        text = self.text(name)
        kind = expression_type(text)
        if kind is None:
            raise self.error(name, f"unknown expression type {norm(text)!r}",
                             fix="use macro / micro (also accepted: 'Macro', 'Micro - 1/2', 'micro-expression')")
        return kind


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even; frame 10.5 must not go down in one row and up in the next.
    return int(math.floor(x + 0.5))


def interval(row: Row, stats: Counter, *, base: int, to_index=None, names=("onset", "apex", "offset"),
             integer: bool = False):
    """(onset, apex, offset) as 0-based frames from a row in `base`-numbered frames.

    Frame 0 of a 1-based source means "not annotated": an offset of 0 becomes the apex (CAS(ME)^2
    ships 44 macro rows like that), an onset of 0 becomes the first frame, an apex of 0 or -1 the
    midpoint. `to_index` maps source frame numbers to 0-based positions (default: minus `base`).
    """
    n_on, n_apex, n_off = names
    raw = [row.number(n_on, integer=integer), row.number(n_apex, False, integer), row.number(n_off, integer=integer)]
    if any(x is not None and not x.is_integer() for x in raw):
        stats["fractional frame numbers rounded half up"] += 1
    onset, apex, offset = (None if x is None else _round_half_up(x) for x in raw)
    if apex is not None and (apex < 0 or (base == 1 and apex == 0)):
        apex = None
    if base == 1 and offset == 0 and apex is not None:
        offset, stats["offset 0 -> apex"] = apex, stats["offset 0 -> apex"] + 1
    if base == 1 and onset == 0:
        onset, stats["onset 0 -> first frame"] = 1, stats["onset 0 -> first frame"] + 1
    if onset < base:
        raise row.error(n_on, f"frame {onset} is before the first frame ({base})", fix=f"frames here start at {base}")
    if onset > offset:
        raise row.error(n_off, f"onset {onset} is after offset {offset}", fix="swap or correct onset/offset")
    to_index = to_index or (lambda x, side: x - base)
    on_i, off_i = to_index(onset, "first"), to_index(offset, "last")
    if on_i > off_i:
        raise row.error(n_off, f"no frame of the video lies in [{onset}, {offset}]", fix="check the frame folder")
    if apex is None:
        stats["apex missing -> midpoint"] += 1
        return on_i, (on_i + off_i) // 2, off_i
    apex_i = to_index(apex, "last")
    if not on_i <= apex_i <= off_i:
        stats["apex outside interval -> clamped"] += 1
        apex_i = min(max(apex_i, on_i), off_i)
    return on_i, apex_i, off_i


def finish(records: list[dict], path, stats: Counter) -> pd.DataFrame:
    """The interval table of the records (each with its source "row" number), repairs and repeats reported."""
    for what, count in sorted(stats.items()):
        log.warning("%s: %d row(s): %s", path, count, what)
    rows = [r["row"] for r in records]
    df = drop_repeats(pd.DataFrame(records, columns=INTERVAL_COLUMNS), path, rows)
    log.info("%s: %d intervals (%d macro, %d micro) in %d videos", path, len(df),
             int((df["type"] == "macro").sum()), int((df["type"] == "micro").sum()), df["video"].nunique())
    return validate_intervals(df, str(path))


def read_excel(path, sheet_name=0):
    """Raw cells (no header) of one sheet (index), or of all sheets by name when sheet_name is None."""
    path = Path(path)
    if not path.is_file():
        raise DataError("annotation file not found", path=path, fix="check the path")
    with open(path, "rb") as f:
        magic = f.read(8)
    try:
        # Chosen by content, not name: old .xls is an OLE2 file (xlrd), .xlsx a zip (openpyxl).
        if magic.startswith(b"\xd0\xcf\x11\xe0"):
            sheets = _read_xls(path)
        elif magic.startswith(b"PK"):
            sheets = pd.read_excel(path, sheet_name=None, header=None, dtype=object, engine="openpyxl")
        else:
            raise ValueError("neither an .xlsx (zip) nor an .xls (OLE2) file")
    except Exception as e:
        # Corrupt workbooks surface as many exception types from xlrd/openpyxl/zipfile internals.
        readers = ("xlrd", "openpyxl", "zipfile")
        if not isinstance(e, (ValueError, KeyError, OSError)) and type(e).__module__.split(".")[0] not in readers:
            raise
        raise DataError(f"cannot read as an Excel workbook ({type(e).__name__}: {e})", path=path,
                        fix="pass the .xlsx/.xls file the dataset ships, or a CSV with --format csv") from None
    return sheets if sheet_name is None else list(sheets.values())[sheet_name]


def _read_xls(path) -> dict[str, pd.DataFrame]:
    book = xlrd.open_workbook(str(path))
    return {sheet.name: pd.DataFrame([sheet.row_values(i) for i in range(sheet.nrows)], dtype=object)
            for sheet in book.sheets()}


def rows(df: pd.DataFrame, start: int, columns: dict[str, int], path, first_number: int, letters=True):
    """Row objects for df rows from `start`, skipping blank rows; numbers as the user sees them."""
    for i in range(start, len(df)):
        values = df.iloc[i]
        if all(blank(v) for v in values):
            continue
        cells = {name: (j, values.iloc[j] if j < len(values) else None) for name, j in columns.items()}
        yield Row(path, i - start + first_number, cells, letters)


def header_columns(header: list, wanted: list[str], path, row_number: int, optional=()) -> dict[str, int]:
    """Map wanted column names to indices in a header row (case/space-insensitive)."""
    found = {norm(v): j for j, v in enumerate(header) if isinstance(v, str) and v.strip()}
    missing = [w for w in wanted if norm(w) not in found]
    if missing:
        shown = [str(v) for v in header if isinstance(v, str) and v.strip()]
        raise DataError(f"header row {row_number} lacks column(s) {missing}; found {shown}", path=path,
                        field=missing[0], fix=f"the header must name {wanted}")
    columns = {w: found[norm(w)] for w in wanted}
    columns.update({o: found[norm(o)] for o in optional if norm(o) in found})
    return columns


def position_mapper(numbers: np.ndarray):
    """Frame file number -> 0-based position; onsets round up and offsets down to a present frame."""
    return lambda x, side: int(np.searchsorted(numbers, x, "left" if side == "first" else "right")) - (side != "first")
