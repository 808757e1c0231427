"""`python -m data prepare`: the published layouts built from synthetic videos, the checks, Ray tasks, resume."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_DETECTOR_OVERRIDES

from data.__main__ import COMMANDS
from data.annotations.adapters import LOADERS
from data.common.cli import dispatch
from data.common.errors import ConfigError, DataError
from data.common.frames import natural_key
from data.common.tables import read_intervals, read_videos
from data.common.video_io import read_frames, write_mp4
from data.prepare import checks
from data.prepare.layouts import LAYOUTS, scan
from data.synthetic.config import load_synthetic_config
from data.synthetic.generate import generate
from tests.published_layouts import export
from tests.workbooks import write_casme2

REPO = Path(__file__).resolve().parents[1]
# One macro and one micro event per video, no distractors: every event stands well clear of the flow baseline's
# thresholds (SOFTNet's are relative to each video's highest score), so its outcome does not hinge on the
# compression noise that preparing adds (JPEG frames, re-aligned and re-encoded crops) and a difference in F1
# means prepare changed what the spotter sees (order, frames, frame rate, ids).
CLEAR_EVENTS = ["videos_per_subject=1", "events.macro_per_video=[1,1]", "events.micro_per_video=[1,1]",
                "events.macro_duration_s=[1.0,1.4]", "events.micro_duration_s=[0.3,0.45]",
                "events.macro_amplitude=[0.2,0.2]", "events.micro_amplitude=[0.09,0.09]", "blinks.min_count=0",
                "blinks.per_minute=[0,0]", "talking.min_count=0", "talking.segments_per_video=[0,0]",
                "head.min_moves=0", "head.moves_per_minute=[0,0]", "light.gain_drift=0", "light.gradient_drift=0"]
SETS = {"casme2": ["seed=2", "subjects=3", "duration_s=8"],  # 30 fps, 240 frames per video
        "samm": ["seed=2", "subjects=2", "duration_s=5", "fps=200"]}  # 200 fps, 1,000 frames; LOSO needs 2


def run(*argv, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def counts(metrics_file: Path) -> dict:
    megc = json.loads(metrics_file.read_text())["megc"]
    return {kind: (megc[kind]["tp"], megc[kind]["fp"], megc[kind]["fn"], megc[kind]["f1"])
            for kind in ("macro", "micro", "overall")}


def short_loso(data: Path, out: Path) -> dict:
    """`python -m spotting loso` on flow cues only (no heads, no encoder channels), which also scores the flow baseline
    on the same videos: {"loso": megc counts, "baseline": megc counts, "folds": held-out subjects}."""
    proc = run("spotting", "loso", "--config", "configs/spotting/loso.yaml", f"finetune.data.root={data}",
               f"out={out}", "channels=[cues,flow]", "parallel=false",
               "final_model=false",
               *TINY_DETECTOR_OVERRIDES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"loso": counts(out / "metrics.json"), "baseline": counts(out / "baseline_metrics.json"),
            "folds": sorted(p.name for p in (out / "folds").iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["casme2", "samm"])
def test_published_layout_gives_the_synthetic_sets_intervals_and_f1(fmt, tmp_path):
    """The synthetic set as CAS(ME)^2 (30 fps) or SAMM-LV (200 fps) publishes it -> prepare -> the same intervals,
    and the same flow-baseline F1 as the synthetic set read directly. The LOSO spotter (cue fusion fitted on
    1-2 training subjects) runs on the result with the published subjects as folds; its F1 is not compared:
    its thresholds come from tied grid points on so few events and move with the compression noise (measured:
    equal at 30 fps, one false positive apart at 200 fps)."""
    dataset = generate(load_synthetic_config(None, SETS[fmt] + CLEAR_EVENTS), tmp_path / "synthetic",
                       progress=False)
    book, expected = export(dataset, fmt, tmp_path / fmt)
    out = tmp_path / "prepared"
    proc = run("data", "prepare", tmp_path / fmt, "--format", fmt, "--annotations", book, "--out", out,
               "--workers", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout and "0 already done" in proc.stdout

    got = read_intervals(out / "intervals.csv").sort_values(["video", "onset", "offset"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    videos, direct = read_videos(out / "videos.csv"), read_videos(dataset / "videos.csv")
    assert sorted(videos["video"]) == sorted(expected["video"].unique())
    assert list(videos["num_frames"]) == list(direct["num_frames"])
    assert set(videos["fps"]) == {LAYOUTS[fmt].fps} == set(direct["fps"])
    assert all(read_frames(p, [0]).shape == (1, 160, 160, 3) for p in videos["path"])

    prepared, original = short_loso(out, tmp_path / "loso_prepared"), short_loso(dataset, tmp_path / "loso_direct")
    assert prepared["baseline"] == original["baseline"]
    assert prepared["folds"] == sorted(expected["subject"].unique()) and len(original["folds"]) == len(videos)
    for result in (prepared, original):  # every event of every held-out subject was scored
        tp, _, fn, _ = result["loso"]["overall"]
        assert tp + fn == len(expected)


# ---------------------------------------------------------------- checks (file names only, nothing decoded)

def touch_frames(folder: Path, numbers, name="img{}.jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        (folder / name.format(n)).touch()


def casme2_rows(*rows):
    """code_final rows: (subject index, onset, apex, offset, type), 1-based frame numbers, video anger1."""
    return [[i, f"anger1_{k}", on, apex, off, "", "negative", f"{kind}-expression", ""]
            for k, (i, on, apex, off, kind) in enumerate(rows)]


@pytest.fixture
def casme2_root(tmp_path):
    """rawpic/s15/15_0401girlcrashing: img1..img60 without img21-img23; s16/16_0101disgustingteeth: unannotated."""
    root = tmp_path / "CASME2"
    touch_frames(root / "rawpic" / "s15" / "15_0401girlcrashing", [n for n in range(1, 61) if n not in (21, 22, 23)])
    touch_frames(root / "rawpic" / "s16" / "16_0101disgustingteeth", range(1, 41))
    return root


def checked(root, book, skip_missing=False, clip=False):
    layout = LAYOUTS["casme2"]
    found = checks.Findings()
    videos = scan(layout, root, None)
    intervals = LOADERS["casme2"](book)
    videos, intervals = checks.match_annotations(layout, videos, intervals, book, skip_missing, found)
    return checks.fit_to_frames(layout, videos, intervals, book, clip, found), found, videos


def test_gaps_are_listed_and_file_numbers_map_to_the_frames_present(casme2_root):
    book = write_casme2(casme2_root / "code_final.xlsx", rows=casme2_rows((1, 10, 12, 20, "micro"),
                                                                          (1, 19, 22, 30, "macro")), naming=False)
    intervals, found, videos = checked(casme2_root, book)
    # img24 is the 21st file present: numbers after the gap sit 3 positions earlier; onset 19 -> position 18;
    # apex 22 (missing) -> the last frame before it (img20, position 19); offset 30 -> position 26.
    assert [tuple(r) for r in intervals[["onset", "apex", "offset"]].itertuples(index=False)] == \
        [(9, 11, 19), (18, 19, 26)]
    assert found.gaps == {"15_0401girlcrashing": [(21, 23)]}
    assert found.unannotated == ["16_0101disgustingteeth"]
    assert [v.subject for v in videos] == ["s15", "s16"] and videos[0].num_frames == 57
    lines = checks.report_lines(found, 0.9)
    assert any("15_0401girlcrashing: number(s) 21-23 missing (3 frames)" in ln for ln in lines)
    assert any("without annotation" in ln and "16_0101disgustingteeth" in ln for ln in lines)


def test_annotated_videos_without_frames_are_named_with_where_they_should_be(casme2_root, tmp_path):
    book = write_casme2(tmp_path / "code_final.xlsx", rows=casme2_rows((1, 10, 12, 20, "micro"),
                                                                       (2, 5, 6, 9, "micro")), naming=False)
    touch_frames(casme2_root / "rawpic" / "s16" / "16_0401girlcrash", range(1, 5))  # cut short when unpacked
    with pytest.raises(DataError) as e:
        checked(casme2_root, book)
    text = str(e.value)
    assert str(book) in text and "16_0401girlcrashing (expected in ROOT/rawpic/s16/16_0401girlcrashing" in text
    assert "an unannotated folder is '16_0401girlcrash'" in text and "--skip-missing" in text
    intervals, found, _ = checked(casme2_root, book, skip_missing=True)
    assert found.missing == ["16_0401girlcrashing"] and set(intervals["video"]) == {"15_0401girlcrashing"}


def test_intervals_past_the_last_frame_fail_or_are_clipped(casme2_root, tmp_path):
    rows = casme2_rows((1, 50, 58, 65, "macro"), (1, 61, 62, 64, "micro"), (1, 2, 3, 4, "micro"))
    book = write_casme2(tmp_path / "code_final.xlsx", rows=rows, naming=False)
    with pytest.raises(DataError, match=r"2 interval\(s\) end past their video's last frame: 15_0401girlcrashing "
                                        r"macro 50-65 \(file numbers; the last frame is number 60\)") as e:
        checked(casme2_root, book)
    assert "--clip-intervals" in e.value.fix and str(book) in str(e.value)
    intervals, found, _ = checked(casme2_root, book, clip=True)
    # clipped to img60, then mapped past the gap img21-img23: numbers 50 and 60 are positions 46 and 56
    assert [tuple(r) for r in intervals[["onset", "offset"]].itertuples(index=False)] == [(46, 56), (1, 3)]
    assert found.clipped == [
        "15_0401girlcrashing macro 50-65 (file numbers; the last frame is number 60): offset -> 59",
        "15_0401girlcrashing micro 61-64 (file numbers; the last frame is number 60): dropped"]


def test_ids_subjects_and_frame_numbers_that_do_not_line_up(casme2_root, tmp_path):
    book = write_casme2(tmp_path / "code_final.xlsx", rows=casme2_rows((1, 1, 2, 3, "micro")), naming=False)
    s15, s16 = casme2_root / "rawpic" / "s15", casme2_root / "rawpic" / "s16"
    touch_frames(s16 / "15_0401girlcrashing", range(1, 5))
    with pytest.raises(DataError, match="two videos share the id '15_0401girlcrashing'"):
        checked(casme2_root, book)
    (s15 / "15_0401girlcrashing").rename(s15 / "elsewhere")  # index 1 is s15, but the frames sit under s16
    with pytest.raises(DataError, match="lies under subject 's16' on disk but the annotations say 's15'"):
        checked(casme2_root, book)
    (s16 / "15_0401girlcrashing").rename(tmp_path / "gone")
    (s15 / "elsewhere").rename(s15 / "15_0401girlcrashing")
    (s15 / "15_0401girlcrashing" / "img07.jpg").touch()  # img7.jpg exists too
    with pytest.raises(DataError, match=r"img0?7.jpg and .*img0?7.jpg carry the same number 7"):
        checked(casme2_root, book)


def test_natural_order_and_layout_errors(tmp_path):
    assert sorted(["img10.jpg", "img9.jpg", "img100.jpg"], key=natural_key) == ["img9.jpg", "img10.jpg",
                                                                                 "img100.jpg"]
    with pytest.raises(DataError, match="no samm videos found") as e:
        scan(LAYOUTS["samm"], tmp_path, None)
    assert "SAMM_longvideos/SUBJECT_VIDEO/SUBJECT_VIDEO_0001.jpg" in str(e.value)
    touch_frames(tmp_path / "clips" / "a", range(3), "{}.png")
    with pytest.raises(ConfigError, match="frame folders need a frame rate"):
        scan(LAYOUTS["folder"], tmp_path / "clips", None)
    assert scan(LAYOUTS["folder"], tmp_path / "clips", 25.0)[0].video == "a"


# ---------------------------------------------------------------- the face work: Ray tasks, failures, resume

def write_jpegs(folder: Path, frames: np.ndarray, start: int = 1) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i + start:05d}.jpg"), np.ascontiguousarray(frame[..., ::-1]))


def test_folder_of_videos_and_frame_folders_fails_per_video_and_resumes(tmp_path, carphone_frames, capsys):
    root, out = tmp_path / "mine", tmp_path / "prepared"
    write_jpegs(root / "p1" / "take1", carphone_frames[:30])
    write_mp4(root / "p2" / "take1.mp4", carphone_frames[30:60], 29.97)
    grey = np.full((15, *carphone_frames.shape[1:]), 128, np.uint8)  # the person leaves: no face
    write_jpegs(root / "p3", np.concatenate([carphone_frames[60:90], grey]))
    write_jpegs(root / "p3", carphone_frames[:1, ::2, ::2], start=40)  # one frame at half the size
    csv = tmp_path / "gt.csv"
    csv.write_text("subject,video,onset,offset,type\nA,p1__take1,3,9,micro\nB,p2__take1,0,20,macro\n"
                   "B,p3,5,12,micro\n")
    argv = ["prepare", str(root), "--format", "folder", "--annotations", str(csv), "--out", str(out),
            "--fps", "29.97", "--size", "96", "--workers", "2", "--no-progress"]
    assert dispatch("data", COMMANDS, argv) == 1
    printed = capsys.readouterr().out
    assert "failed: p3:" in printed and "00040.jpg" in printed and "frame is 88x72" in printed
    assert "tables not written" in printed and not (out / "videos.csv").exists()
    assert json.loads((out / "faces" / "p1__take1.json").read_text())["status"] == "ok"

    write_jpegs(root / "p3", carphone_frames[90:91], start=40)  # fixed: a full-size frame again
    assert dispatch("data", COMMANDS, argv) == 0
    printed = capsys.readouterr().out
    assert "3 videos (3 annotated, 3 intervals), 1 processed, 2 already done" in printed
    fraction = json.loads((out / "faces" / "p3.json").read_text())["face_fraction"]
    assert fraction < 0.9 and f"face found in only {100 * fraction:.1f}% of the frames of p3 (< 90%)" in printed
    videos = read_videos(out / "videos.csv")
    assert list(videos["subject"]) == ["A", "B", "B"] and list(videos["num_frames"]) == [30, 30, 45]
    assert set(videos["fps"]) == {29.97} and read_frames(videos["path"][2]).shape == (45, 96, 96, 3)
    pd.testing.assert_frame_equal(read_intervals(out / "intervals.csv"), LOADERS["csv"](csv))
    report = json.loads((out / "prepare.json").read_text())
    assert report["complete"] and report["findings"]["low_face"] == {"p3": fraction}


def test_a_zero_byte_video_fails_alone_and_the_next_commands_quote_paths(tmp_path, carphone_frames, capsys):
    """An empty .mp4 among good videos (issue 29): the good ones are processed, the empty one is named with why and
    what to do, no tables (exit 1); excluded, the rerun writes the tables, and the printed next commands keep a
    path with spaces as one argument."""
    import shlex

    root, out = tmp_path / "my videos", tmp_path / "prepared set"
    write_mp4(root / "p1.mp4", carphone_frames[:30], 29.97)
    write_mp4(root / "p2.mp4", carphone_frames[30:60], 29.97)
    (root / "broken.mp4").write_bytes(b"")
    argv = ["prepare", str(root), "--format", "folder", "--out", str(out), "--size", "96", "--workers", "1",
            "--no-progress"]
    assert dispatch("data", COMMANDS, argv) == 1
    printed = capsys.readouterr().out
    assert "3 videos (3 annotated, 0 intervals), 2 processed, 0 already done" in printed
    assert f"failed: broken: {root / 'broken.mp4'}: not a decodable video (the file is empty: 0 bytes)" in printed
    assert "--exclude VIDEO" in printed and "tables not written: 1 video(s) failed" in printed
    assert not (out / "videos.csv").exists()
    assert [json.loads((out / "faces" / f"{v}.json").read_text())["status"] for v in ("p1", "p2")] == ["ok", "ok"]

    assert dispatch("data", COMMANDS, [*argv, "--exclude", "broken"]) == 0
    printed = capsys.readouterr().out
    assert "2 videos (2 annotated, 0 intervals), 0 processed, 2 already done" in printed
    assert list(read_videos(out / "videos.csv")["video"]) == ["p1", "p2"]
    baseline, loso = [ln.split(":", 1)[-1] for ln in printed.splitlines() if "python -m spotting" in ln]
    assert shlex.split(baseline)[shlex.split(baseline).index("--data") + 1] == str(out)
    assert f"finetune.data.root={out}" in shlex.split(loso)


def test_interrupt_leaves_no_half_written_file_and_the_rerun_resumes(tmp_path, carphone_frames):
    root, out = tmp_path / "SAMM_longvideos", tmp_path / "prepared"
    for i in range(4):
        write_jpegs(root / f"{6 + i:03d}_1", carphone_frames)  # 120 frames each (names need not be SAMM's here)
    args = [sys.executable, "-m", "data", "prepare", str(root), "--format", "samm", "--out", str(out),
            "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((out / "faces").glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "interrupted" in err
    finished = sorted(p.stem for p in (out / "faces").glob("*.json"))
    assert 1 <= len(finished) < 4 and not (out / "videos.csv").exists() and not (out / "prepare.json").exists()
    visible = [p for p in (out / "faces").iterdir() if not p.name.startswith(".")]
    for path in visible:  # every visible file is whole: the npz loads, the mp4 decodes
        if path.suffix == ".npz":
            np.load(path)["found"]
        elif path.suffix == ".mp4":
            assert len(read_frames(path)) == 120

    rerun = run("data", "prepare", root, "--format", "samm", "--out", out, "--workers", "1", "--no-progress")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{4 - len(finished)} processed, {len(finished)} already done" in rerun.stdout
    assert len(read_videos(out / "videos.csv")) == 4 and len(read_intervals(out / "intervals.csv")) == 0
