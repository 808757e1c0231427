"""Dataset annotation files -> the interval table (DESIGN.md §3).

`load_annotations(path, format=None)` returns subject,video,onset,apex,offset,type,emotion with
0-based inclusive integer frames and type macro|micro. One loader per format: load_casme2
(CAS(ME)^2code_final.xlsx), load_samm (SAMM_LongVideos_V*_Release.xlsx), load_casme3 (CAS(ME)^3
part A .xls) and load_csv (the interval table itself, or a friendlier CSV).

A malformed file raises DataError naming the file, the row as a spreadsheet shows it (first
row = 1; for CSV the header is line 1), the column, and the fix. Repairs of known quirks of the
real files (missing offsets, missing apexes, fractional frames) are logged as warnings with
their counts.
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
from data.common.tables import INTERVAL_COLUMNS, drop_repeats, validate_intervals

log = logging.getLogger(__name__)

FORMATS = ("casme2", "samm", "casme3", "csv")

# CAS(ME)^2 naming rules, used when the workbook lacks its "naming rule1"/"naming rule2" sheets.
# Column A of the code sheet is a subject *index* 1..22, not the subject number: "naming rule1"
# maps index -> number (rows "15, s15, 1"), e.g. index 1 -> s15 whose long videos are
# rawpic/s15/15_0401girlcrashing. "naming rule2" maps the expression-name prefix -> stimulus
# code (anger1 -> 0401). Facts from published spotting code that reads these sheets: SOFTNet's
# load_excel (zip of rule1 columns 2->1 and rule2 columns 1->0) and MEGC scripts that build
# "s%s/%s_0%s" paths from them; the stimulus names are the raw dataset's folder names
# (including its own spelling "unnyfarting").
CASME2_SUBJECT_NUMBERS = dict(zip(range(1, 23), (15, 16, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                                                29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 40)))
CASME2_STIMULUS_CODES = {"disgust1": "0101", "disgust2": "0102", "anger1": "0401", "anger2": "0402",
                         "happy1": "0502", "happy2": "0503", "happy3": "0505", "happy4": "0507",
                         "happy5": "0508"}
CASME2_VIDEO_NAMES = {"0101": "disgustingteeth", "0102": "eatingworms", "0401": "girlcrashing",
                      "0402": "beatingpregnantwoman", "0502": "funnyerrors", "0503": "unnyfarting",
                      "0505": "funnyinnovations", "0507": "climbingthewall", "0508": "funnydunkey"}
CASME2_COLUMNS = ["subject index", "expression", "onset", "apex", "offset", "AUs", "emotion", "type",
                  "self-report emotion"]
SAMM_REQUIRED = ["Subject", "Filename", "Onset", "Apex", "Offset", "Type"]
CASME3_REQUIRED = ["Subject", "Filename", "Onset", "Apex", "Offset", "Expression type"]


def _letter(index: int) -> str:
    """Spreadsheet column letter of a 0-based column index (these sheets stay within A-Z)."""
    return chr(65 + index) if index < 26 else f"#{index + 1}"


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def _looks_numeric(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _norm(name) -> str:
    return re.sub(r"\s+", " ", str(name)).strip().lower()


class _Row:
    """One source row: typed cell access whose errors name the file, row and column."""

    def __init__(self, path, number: int, cells: dict, letters: bool = True):
        self.path, self.line, self.cells, self.letters = str(path), number, cells, letters

    def error(self, name: str, message: str, fix: str = "correct the cell") -> DataError:
        index, _ = self.cells.get(name, (None, None))
        where = f"column {_letter(index)} ({name})" if self.letters and index is not None else f"column {name!r}"
        return DataError(f"row {self.line}, {where}: {message}", path=self.path, field=name, fix=fix)

    def raw(self, name):
        value = self.cells.get(name, (None, None))[1]
        return None if _blank(value) else value

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
        text = _norm(self.text(name))
        for kind in ("macro", "micro"):
            if text.startswith(kind):
                return kind
        raise self.error(name, f"unknown expression type {text!r}",
                         fix="use macro / micro (also accepted: 'Macro', 'Micro - 1/2', 'micro-expression')")


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even; frame 10.5 must not go down in one row and up in the next.
    return int(math.floor(x + 0.5))


def _interval(row: _Row, stats: Counter, *, base: int, to_index=None, names=("onset", "apex", "offset"),
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


def _finish(records: list[dict], path, stats: Counter) -> pd.DataFrame:
    """The interval table of the records (each with its source "row" number), repairs and repeats reported."""
    for what, count in sorted(stats.items()):
        log.warning("%s: %d row(s): %s", path, count, what)
    rows = [r["row"] for r in records]
    df = drop_repeats(pd.DataFrame(records, columns=INTERVAL_COLUMNS), path, rows)
    log.info("%s: %d intervals (%d macro, %d micro) in %d videos", path, len(df),
             int((df["type"] == "macro").sum()), int((df["type"] == "micro").sum()), df["video"].nunique())
    return validate_intervals(df, str(path))


def _read_excel(path, sheet_name=0):
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


def _rows(df: pd.DataFrame, start: int, columns: dict[str, int], path, first_number: int, letters=True):
    """_Row objects for df rows from `start`, skipping blank rows; numbers as the user sees them."""
    for i in range(start, len(df)):
        values = df.iloc[i]
        if all(_blank(v) for v in values):
            continue
        cells = {name: (j, values.iloc[j] if j < len(values) else None) for name, j in columns.items()}
        yield _Row(path, i - start + first_number, cells, letters)


def _header_columns(header: list, wanted: list[str], path, row_number: int, optional=()) -> dict[str, int]:
    """Map wanted column names to indices in a header row (case/space-insensitive)."""
    found = {_norm(v): j for j, v in enumerate(header) if isinstance(v, str) and v.strip()}
    missing = [w for w in wanted if _norm(w) not in found]
    if missing:
        shown = [str(v) for v in header if isinstance(v, str) and v.strip()]
        raise DataError(f"header row {row_number} lacks column(s) {missing}; found {shown}", path=path,
                        field=missing[0], fix=f"the header must name {wanted}")
    columns = {w: found[_norm(w)] for w in wanted}
    columns.update({o: found[_norm(o)] for o in optional if _norm(o) in found})
    return columns


# ---------------------------------------------------------------- CAS(ME)^2

def _casme2_naming(sheets: dict, path) -> tuple[dict, dict]:
    """(subject index -> subject number, expression prefix -> stimulus code) from the naming sheets."""
    by_key = {re.sub(r"\s+", "", str(k)).lower(): v for k, v in sheets.items()}
    subjects, stimuli = dict(CASME2_SUBJECT_NUMBERS), dict(CASME2_STIMULUS_CODES)
    rule1, rule2 = by_key.get("namingrule1"), by_key.get("namingrule2")
    for sheet, frame, width in (("naming rule1", rule1, 3), ("naming rule2", rule2, 2)):
        if frame is not None and frame.shape[1] < width:
            raise DataError(f"sheet {sheet!r} has {frame.shape[1]} column(s), expected {width}", path=path,
                            field="layout", fix="pass the workbook as the dataset ships it")
    if rule1 is not None:
        numeric = rule1.apply(pd.to_numeric, errors="coerce")
        ok = numeric[0].notna() & numeric[2].notna()
        subjects = {int(i): int(n) for n, i in zip(numeric[0][ok], numeric[2][ok])}
    if rule2 is not None:
        codes = pd.to_numeric(rule2[0], errors="coerce")
        stimuli = {str(name).strip(): f"{int(code):04d}" for code, name in zip(codes, rule2[1]) if pd.notna(code)}
    return subjects, stimuli


def load_casme2(path) -> pd.DataFrame:
    """CAS(ME)^2 `code_final.xlsx`: first sheet, no header, 9 columns (see CASME2_COLUMNS).

    Frames: CAS(ME)^2 long videos ship as rawpic/sNN/NN_XXXXname/img1.jpg ... imgN.jpg, and the
    annotations count in those 1-based numbers (SOFTNet subtracts 1 before indexing its frame
    arrays), so we subtract 1: img1.jpg is frame 0 of the video. Subject ids are "s15"; video
    ids are the raw folder names, e.g. "15_0401girlcrashing".
    """
    sheets = _read_excel(path, sheet_name=None)
    name, codes = next(iter(sheets.items()))
    first = list(codes.iloc[0]) if len(codes) else []
    # The self-report column may be blank throughout (then the sheet ends after column H).
    if codes.shape[1] < len(CASME2_COLUMNS) - 1 or not all(_looks_numeric(first[j]) for j in (0, 2, 3, 4)):
        raise DataError(f"sheet {name!r} does not look like code_final: {codes.shape[1]} columns, first row "
                        f"{[str(v) for v in codes.iloc[0, :9]] if len(codes) else []}", path=path, field="layout",
                        fix=f"the first sheet must hold 9 columns {CASME2_COLUMNS} and no header row")
    subjects, stimuli = _casme2_naming(sheets, path)
    columns = dict(zip(CASME2_COLUMNS, range(len(CASME2_COLUMNS))))
    records, stats = [], Counter()
    for row in _rows(codes, 0, columns, path, first_number=1):
        index = int(row.number("subject index", integer=True))
        if index not in subjects:
            raise row.error("subject index", f"unknown subject index {index}",
                            fix=f"indices per 'naming rule1' are {sorted(subjects)}")
        number = subjects[index]
        prefix = row.text("expression").split("_")[0]
        if prefix not in stimuli:
            raise row.error("expression", f"unknown expression name {prefix!r}",
                            fix=f"names per 'naming rule2' are {sorted(stimuli)}")
        code = stimuli[prefix]
        if code not in CASME2_VIDEO_NAMES:
            raise row.error("expression", f"stimulus code {code} has no known CAS(ME)^2 video name",
                            fix=f"known codes: {sorted(CASME2_VIDEO_NAMES)}")
        onset, apex, offset = _interval(row, stats, base=1)
        records.append({"row": row.line, "subject": f"s{number}", "video": f"{number}_{code}{CASME2_VIDEO_NAMES[code]}",
                        "onset": onset, "apex": apex, "offset": offset, "type": row.kind("type"),
                        "emotion": row.text("emotion", required=False)})
    return _finish(records, path, stats)


# ---------------------------------------------------------------- SAMM-LV

def _find_header(df: pd.DataFrame, path, must=("subject", "filename"), scan=30) -> int:
    for i in range(min(scan, len(df))):
        names = {_norm(v) for v in df.iloc[i] if isinstance(v, str)}
        if all(m in names for m in must):
            return i
    raise DataError(f"no header row naming {list(must)} in the first {scan} rows", path=path, field="layout",
                    fix="pass the release workbook unchanged (SAMM-LV: notes on rows 1-9, header on row 10)")


def load_samm(path) -> pd.DataFrame:
    """SAMM-LV `SAMM_LongVideos_V*_Release.xlsx`: notes on rows 1-9, the header on row 10.

    Frames: the long videos ship as NNN_N/NNN_N_0001.jpg ... (1-based; MEGC baselines build
    the frame list as [1, number of images]), so we subtract 1. Fractional frame numbers are
    rounded half up. Subject ids are "007"; video ids the Filename without its last "_N"
    ("007_6_1" -> "007_6").
    """
    df = _read_excel(path)
    h = _find_header(df, path)
    columns = _header_columns(list(df.iloc[h]), SAMM_REQUIRED, path, h + 1, optional=("Emotion",))
    records, stats = [], Counter()
    for row in _rows(df, h + 1, columns, path, first_number=h + 2):
        filename = row.text("Filename")
        if "_" not in filename:
            raise row.error("Filename", f"{filename!r} has no '_N' suffix", fix="SAMM-LV names look like 007_6_1")
        subject = row.text("Subject")
        subject = f"{int(subject):03d}" if subject.isdigit() else subject
        onset, apex, offset = _interval(row, stats, base=1, names=("Onset", "Apex", "Offset"))
        records.append({"row": row.line, "subject": subject, "video": filename.rsplit("_", 1)[0], "onset": onset,
                        "apex": apex, "offset": offset, "type": row.kind("Type"),
                        "emotion": row.text("Emotion", required=False)})
    return _finish(records, path, stats)


# ---------------------------------------------------------------- CAS(ME)^3 part A

def _casme3_frame_numbers(frames_root, subject: str, session: str, path) -> np.ndarray:
    folder = Path(frames_root) / subject / session
    folder = folder / "color" if (folder / "color").is_dir() else folder
    numbers = sorted(int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit()) if folder.is_dir() else []
    if not numbers:
        raise DataError(f"no numbered frames (N.jpg) in {folder}", path=path, field="Filename",
                        fix="frames_root must hold SUBJECT/SESSION/color/N.jpg as CAS(ME)^3 ships them")
    return np.asarray(numbers)


def _position_mapper(numbers: np.ndarray):
    """Frame file number -> 0-based position; onsets round up and offsets down to a present frame."""
    return lambda x, side: int(np.searchsorted(numbers, x, "left" if side == "first" else "right")) - (side != "first")


def load_casme3(path, frames_root=None) -> pd.DataFrame:
    """CAS(ME)^3 part A `CAS(ME)3_part_A_v1.xls`: header on row 1 (Subject, Filename, Onset, Apex,
    Offset, AU, Expression type, Objective class, emotion). Video ids are "spNO.1_a".

    Frames: the annotations are the numbers in the frame file names (SUBJECT/SESSION/color/N.jpg),
    and those names have gaps where the camera dropped frames, so a number is not a position.
    With `frames_root`, each number maps to its position among the files present (an onset to the
    first frame at or after it, an offset/apex to the last frame at or before it). Without it we
    assume gap-free 1-based numbering (N.jpg -> frame N-1), which is off by the number of earlier
    gaps; pass frames_root whenever the frames are at hand.
    """
    df = _read_excel(path)
    columns = _header_columns(list(df.iloc[0]) if len(df) else [], CASME3_REQUIRED, path, 1,
                              optional=("emotion", "Objective class"))
    emotion = "emotion" if "emotion" in columns else "Objective class"
    if frames_root is None:
        log.warning("%s: no frames_root: assuming gap-free 1-based frame numbers", path)
    records, stats, cache = [], Counter(), {}
    for row in _rows(df, 1, columns, path, first_number=2):
        subject, session = row.text("Subject"), row.text("Filename")
        mapper = None
        if frames_root is not None:
            if (subject, session) not in cache:
                cache[subject, session] = _position_mapper(_casme3_frame_numbers(frames_root, subject, session, path))
            mapper = cache[subject, session]
        onset, apex, offset = _interval(row, stats, base=1, to_index=mapper, names=("Onset", "Apex", "Offset"))
        records.append({"row": row.line, "subject": subject, "video": f"{subject}_{session}", "onset": onset,
                        "apex": apex, "offset": offset, "type": row.kind("Expression type"),
                        "emotion": row.text(emotion, required=False)})
    return _finish(records, path, stats)


# ---------------------------------------------------------------- CSV

def load_csv(path) -> pd.DataFrame:
    """A CSV with a header row; column names are case-insensitive, extra columns are ignored.

    Required: video, onset, offset (0-based inclusive integer frames), type (macro / micro, any
    case; "Macro-expression", "micro-expression", "Micro - 1/2" are accepted too).
    Optional: subject (default: the video id), apex (default: the midpoint of onset and offset),
    emotion (default: empty). The interval table itself (data.common.tables) is such a file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("annotation file not found", path=path, fix="check the path")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse as CSV: {e}", path=path,
                        fix="write a CSV with a header row: video,onset,offset,type[,subject,apex,emotion]") from None
    names = {_norm(c): c for c in df.columns}
    missing = [c for c in ("video", "onset", "offset", "type") if c not in names]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", path=path, field=missing[0],
                        fix="the header must name video, onset, offset and type")
    wanted = ["video", "onset", "offset", "type", "subject", "apex", "emotion"]
    columns = {w: list(df.columns).index(names[w]) for w in wanted if w in names}
    records, stats = [], Counter()
    for row in _rows(df, 0, columns, path, first_number=2, letters=False):
        video = row.text("video")
        onset, apex, offset = _interval(row, stats, base=0, integer=True)
        records.append({"row": row.line, "subject": row.text("subject", required=False) or video, "video": video,
                        "onset": onset, "apex": apex, "offset": offset, "type": row.kind("type"),
                        "emotion": row.text("emotion", required=False)})
    if "apex" not in columns:
        stats.pop("apex missing -> midpoint", None)  # no apex column is a documented default, not a repair
    return _finish(records, path, stats)


# ---------------------------------------------------------------- dispatch

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
        return load_casme3(path, frames_root=frames_root)
    if frames_root is not None:
        log.warning("frames_root is only used by the casme3 format; ignored for %s", fmt)
    return {"casme2": load_casme2, "samm": load_samm, "csv": load_csv}[fmt](path)
