"""CAS(ME)^2 `code_final.xlsx` -> the interval table."""
from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from data.annotations.reading import finish, interval, looks_numeric, read_excel, rows
from data.common.errors import DataError

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
    sheets = read_excel(path, sheet_name=None)
    name, codes = next(iter(sheets.items()))
    first = list(codes.iloc[0]) if len(codes) else []
    # The self-report column may be blank throughout (then the sheet ends after column H).
    if codes.shape[1] < len(CASME2_COLUMNS) - 1 or not all(looks_numeric(first[j]) for j in (0, 2, 3, 4)):
        raise DataError(f"sheet {name!r} does not look like code_final: {codes.shape[1]} columns, first row "
                        f"{[str(v) for v in codes.iloc[0, :9]] if len(codes) else []}", path=path, field="layout",
                        fix=f"the first sheet must hold 9 columns {CASME2_COLUMNS} and no header row")
    subjects, stimuli = _casme2_naming(sheets, path)
    columns = dict(zip(CASME2_COLUMNS, range(len(CASME2_COLUMNS))))
    records, stats = [], Counter()
    for row in rows(codes, 0, columns, path, first_number=1):
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
        onset, apex, offset = interval(row, stats, base=1)
        records.append({"row": row.line, "subject": f"s{number}", "video": f"{number}_{code}{CASME2_VIDEO_NAMES[code]}",
                        "onset": onset, "apex": apex, "offset": offset, "type": row.kind("type"),
                        "emotion": row.text("emotion", required=False)})
    return finish(records, path, stats)
