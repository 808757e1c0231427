"""CAS(ME)^3 part A `CAS(ME)3_part_A_v1.xls` -> the interval table."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from data.annotations.reading import finish, header_columns, interval, position_mapper, read_excel, rows
from data.common.errors import DataError

CASME3_REQUIRED = ["Subject", "Filename", "Onset", "Apex", "Offset", "Expression type"]


def video_id(subject: str, session: str) -> str:
    """The video id of a session: "spNO.1" + "a" -> "spNO.1_a" (the annotations' and the frame folders')."""
    return f"{subject}_{session}"


def frame_folder(frames_root, subject: str, session: str) -> Path:
    """Where a session's colour frames lie: SUBJECT/SESSION/color/N.jpg (or SUBJECT/SESSION/N.jpg)."""
    folder = Path(frames_root) / subject / session
    return folder / "color" if (folder / "color").is_dir() else folder


def _frame_numbers(frames_root, subject: str, session: str, path) -> np.ndarray:
    folder = frame_folder(frames_root, subject, session)
    numbers = sorted(int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit()) if folder.is_dir() else []
    if not numbers:
        raise DataError(f"no numbered frames (N.jpg) in {folder}", path=path, field="Filename",
                        fix="frames_root must hold SUBJECT/SESSION/color/N.jpg as CAS(ME)^3 ships them")
    return np.asarray(numbers)


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
    df = read_excel(path)
    columns = header_columns(list(df.iloc[0]) if len(df) else [], CASME3_REQUIRED, path, 1,
                             optional=("emotion", "Objective class"))
    emotion = "emotion" if "emotion" in columns else "Objective class"
    records, stats, cache = [], Counter(), {}
    for row in rows(df, 1, columns, path, first_number=2):
        subject, session = row.text("Subject"), row.text("Filename")
        mapper = None
        if frames_root is not None:
            if (subject, session) not in cache:
                cache[subject, session] = position_mapper(_frame_numbers(frames_root, subject, session, path))
            mapper = cache[subject, session]
        onset, apex, offset = interval(row, stats, base=1, to_index=mapper, names=("Onset", "Apex", "Offset"))
        records.append({"row": row.line, "subject": subject, "video": video_id(subject, session), "onset": onset,
                        "apex": apex, "offset": offset, "type": row.kind("Expression type"),
                        "emotion": row.text(emotion, required=False)})
    return finish(records, path, stats)
