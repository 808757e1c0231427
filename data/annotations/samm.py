"""SAMM Long Videos `SAMM_LongVideos_V*_Release.xlsx` -> the interval table."""
from __future__ import annotations

from collections import Counter

import pandas as pd

from data.annotations.reading import finish, header_columns, interval, norm, read_excel, rows
from data.common.errors import DataError

SAMM_REQUIRED = ["Subject", "Filename", "Onset", "Apex", "Offset", "Type"]


def _find_header(df: pd.DataFrame, path, must=("subject", "filename"), scan=30) -> int:
    for i in range(min(scan, len(df))):
        names = {norm(v) for v in df.iloc[i] if isinstance(v, str)}
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
    df = read_excel(path)
    h = _find_header(df, path)
    columns = header_columns(list(df.iloc[h]), SAMM_REQUIRED, path, h + 1, optional=("Emotion",))
    records, stats = [], Counter()
    for row in rows(df, h + 1, columns, path, first_number=h + 2):
        filename = row.text("Filename")
        if "_" not in filename:
            raise row.error("Filename", f"{filename!r} has no '_N' suffix", fix="SAMM-LV names look like 007_6_1")
        subject = row.text("Subject")
        subject = f"{int(subject):03d}" if subject.isdigit() else subject
        onset, apex, offset = interval(row, stats, base=1, names=("Onset", "Apex", "Offset"))
        records.append({"row": row.line, "subject": subject, "video": filename.rsplit("_", 1)[0], "onset": onset,
                        "apex": apex, "offset": offset, "type": row.kind("Type"),
                        "emotion": row.text("Emotion", required=False)})
    return finish(records, path, stats)
