"""Every command, given bad input, fails with one `error:` line naming the file (and the row/field where there is
one), a non-zero exit and no traceback; `--debug` shows the traceback."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

INTERVALS = "subject,video,onset,apex,offset,type,emotion\n"


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """A folder of bad inputs: empty and non-video 'videos', broken YAML, bad interval rows."""
    d = tmp_path_factory.mktemp("bad_input")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("not a video\n")
    (d / "broken.yaml").write_text("a: [1\n")
    (d / "unknown.yaml").write_text("no_such_key: 3\n")
    (d / "pack_nosource.yaml").write_text(f"source: folder\nsource_path: {d}/nodir\nout_dir: {d}/packed\n")
    (d / "onset_after_offset.csv").write_text(INTERVALS + "s1,v1,10,12,15,macro,\ns1,v1,30,30,20,micro,\n")
    (d / "beyond_video.csv").write_text(INTERVALS + "s1,v1,10,12,15,macro,\ns1,v1,30,31,500,micro,\n")
    (d / "pred.csv").write_text(INTERVALS.strip() + ",score\ns1,v1,10,12,15,macro,,0.9\n")
    (d / "videos.csv").write_text("subject,video,path,fps,num_frames\ns1,v1,v1.mp4,30,100\n")
    (d / "notes.xlsx").write_text("not a spreadsheet\n")
    (d / "notes.pth").write_text("a few notes, not weights\n")  # torch's unpickler reads 'a' as APPEND
    # issue 29: a trailing comma on the data rows only (pandas read the first column as the index and blamed
    # `offset` for 'micro')
    (d / "trailing_comma.csv").write_text(INTERVALS + "s1,v1,10,12,15,macro,,\ns1,v1,30,31,35,micro,,\n")
    (d / "pred_trailing_comma.csv").write_text(INTERVALS.strip() + ",score\ns1,v1,10,12,15,macro,,0.9,\n")
    return d


# (id, argv with {d} = the bad-input folder, the file the error must name, more text the error must hold)
CASES = [
    ("synth-missing-config", "data synth --config {d}/missing.yaml", "{d}/missing.yaml", "not found"),
    ("synth-unknown-key", "data synth --config {d}/unknown.yaml --out {d}/o", "{d}/unknown.yaml", "no_such_key"),
    ("faces-missing-video", "data faces {d}/missing.mp4 --out {d}/o", "{d}/missing.mp4", ""),
    ("faces-empty-video", "data faces {d}/empty.mp4 --out {d}/o", "{d}/empty.mp4", "not a decodable video"),
    ("flow-not-a-video", "data flow {d}/text.mp4 --out {d}/o", "{d}/text.mp4", "not a decodable video"),
    ("pack-broken-yaml", "data pack --config {d}/broken.yaml", "{d}/broken.yaml", "line 1, column 4"),
    ("pack-missing-source", "data pack --config {d}/pack_nosource.yaml", "{d}/nodir", "source_path"),
    ("annotations-onset-after-offset", "data annotations {d}/onset_after_offset.csv --out {d}/o.csv",
     "{d}/onset_after_offset.csv", "row 3.*offset"),
    ("annotations-trailing-comma", "data annotations {d}/trailing_comma.csv --out {d}/o.csv", "{d}/trailing_comma.csv",
     r"row 2 has 8 fields but the header names 7 columns \(a trailing comma\?\).*remove the extra field"),
    ("evaluate-pred-trailing-comma", "spotting evaluate --gt {d}/pred.csv --pred {d}/pred_trailing_comma.csv",
     "{d}/pred_trailing_comma.csv", r"row 2 has 9 fields but the header names 8 columns"),
    ("annotations-unknown-format", "data annotations {d}/notes.xlsx --out {d}/o.csv", "{d}/notes.xlsx", "format"),
    ("prepare-missing-root", "data prepare {d}/nodir --format casme2 --out {d}/o", "{d}/nodir", "no such folder"),
    ("prepare-bad-annotations", "data prepare {d} --format folder --fps 30 --annotations {d}/onset_after_offset.csv "
     "--out {d}/o", "{d}/onset_after_offset.csv", "row 3.*offset"),
    ("pretrain-unknown-key", "pretrain train --config {d}/unknown.yaml", "{d}/unknown.yaml", "no_such_key"),
    ("pretrain-flops-unknown-key", "pretrain flops --config {d}/unknown.yaml", "{d}/unknown.yaml", "no_such_key"),
    ("pretrain-missing-shards", "pretrain --config configs/pretrain/lgi_tiny.yaml data.shards={d}/noshards",
     "{d}/noshards", "manifest"),
    ("evaluate-onset-after-offset", "spotting evaluate --gt {d}/onset_after_offset.csv --pred {d}/pred.csv",
     "{d}/onset_after_offset.csv", "row 3.*offset"),
    ("evaluate-beyond-video", "spotting evaluate --gt {d}/beyond_video.csv --pred {d}/pred.csv "
     "--videos {d}/videos.csv", "{d}/beyond_video.csv", "offset: row 3.*beyond the last frame"),
    ("evaluate-pred-not-a-table", "spotting evaluate --gt {d}/pred.csv --pred {d}/text.mp4", "{d}/text.mp4",
     "missing column"),
    ("release-missing-checkpoint", "launch release --checkpoint {d}/missing --out {d}/rel", "{d}/missing",
     "not found"),
    ("release-not-a-checkpoint", "launch release --checkpoint {d}/text.mp4 --out {d}/rel", "{d}/text.mp4", ""),
    ("baseline-missing-dataset", "spotting baseline --data {d}/missing --out {d}/o", "{d}/missing", "videos.csv"),
    ("demo-missing-config", "launch demo --config {d}/missing.yaml", "{d}/missing.yaml", "not found"),
    ("finetune-unknown-key", "finetune train --config {d}/unknown.yaml", "{d}/unknown.yaml", "no_such_key"),
    ("finetune-missing-dataset", "finetune data.root={d}/missing", "{d}/missing", "videos.csv"),
    ("finetune-out-of-range", "finetune --config configs/finetune/synthetic.yaml train.lr=-1 out={d}/ft",
     "train.lr=-1", "train.lr: must be > 0"),
    ("loso-missing-config", "spotting loso --config {d}/missing.yaml", "{d}/missing.yaml", "not found"),
    ("published-missing-dataset", "spotting published data.root={d}/missing out={d}/pub", "{d}/missing",
     "videos.csv"),
    ("spot-empty-video", "spotting spot {d}/empty.mp4 --model {d}/nomodel", "{d}/empty.mp4",
     "not a decodable video"),
    ("spot-missing-model", "spotting spot {carphone} --model {d}/nomodel --out {d}/spot", "{d}/nomodel",
     "spotter.json"),
    # issue 16: outputs that are folders or files where the other is needed, text given as weights, overrides
    ("annotations-out-is-a-folder", "data annotations {d}/pred.csv --out {d}", "{d}", "--out: is a folder"),
    ("evaluate-per-video-is-a-folder", "spotting evaluate --gt {d}/pred.csv --pred {d}/pred.csv --per-video {d}",
     "{d}", "--per-video: is a folder"),
    ("identities-folder-is-a-file", "data identities install --folder {d}/text.mp4", "{d}/text.mp4",
     "--folder: is a file"),
    ("live-missing-model", "spotting live {d}/text.mp4 --model {d}/nomodel", "{d}/nomodel", "spotter.json"),
    ("spot-out-is-a-file", "spotting spot {carphone} --model {d}/nomodel --out {d}/text.mp4", "{d}/text.mp4",
     "--out: is a file"),
    ("release-text-checkpoint", "launch release --checkpoint {d}/notes.pth --out {d}/rel", "{d}/notes.pth",
     "--checkpoint: not a PyTorch checkpoint"),
    ("release-text-peer-checkpoint", "launch release --peer --checkpoint {d}/notes.pth --out {d}/rel",
     "{d}/notes.pth", "not a PyTorch checkpoint"),
    ("synth-override-typo", "data synth --config configs/data/synthetic_demo.yaml subjets=2 --out {d}/o",
     "override 'subjets=2'", "unknown key.*did you mean 'subjects'"),
    ("finetune-negative-lr", "finetune train --config configs/finetune/synthetic.yaml train.lr=-1 out={d}/ft",
     "override 'train.lr=-1'", "train.lr: must be > 0"),
]


def run_cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=300)


def fill(text: str, d: Path) -> str:
    from data.common.assets import carphone_video

    return text.format(d=d, carphone=carphone_video())


@pytest.mark.parametrize("argv, named, detail", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_error_line(bad, argv, named, detail):
    proc = run_cli(fill(argv, bad).split())
    errors = [ln for ln in re.split(r"[\r\n]+", proc.stderr) if ln.startswith("error:")]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert fill(named, bad) in errors[0]
    assert re.search(detail, errors[0]), errors[0]


@pytest.mark.parametrize("argv", ["data faces {d}/text.mp4 --out {d}/o", "data flow {d}/empty.mp4 --out {d}/o",
                                  "spotting spot {d}/text.mp4 --model {d}/nomodel --out {d}/o"])
def test_decoder_log_lines_do_not_bury_the_error(bad, argv):
    """FFmpeg and decord print their own lines ('moov atom not found', 'ERROR opening: ...'); the one error line
    must be the only thing a bad video prints, with the decoder's reason inside it."""
    proc = run_cli(fill(argv, bad).split())
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", proc.stderr) if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("flow pairs:")]  # data flow's progress bar
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    reason = "the file is empty: 0 bytes" if "empty.mp4" in argv else "Invalid data found when processing input"
    assert f"not a decodable video ({reason})" in lines[0]


def test_debug_shows_the_traceback(bad):
    proc = run_cli(["spotting", "evaluate", "--gt", str(bad / "onset_after_offset.csv"),
                    "--pred", str(bad / "pred.csv"), "--debug"])
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "DataError" in proc.stderr


def test_every_stage_command_is_covered():
    """A command added to a COMMANDS dict later must get a bad-input case here too."""
    import data.__main__
    import finetune.__main__
    import launch.__main__
    import pretrain.__main__
    import spotting.__main__

    covered = {" ".join(c[1].split()[:2]) for c in CASES}
    stages = {"data": data.__main__, "spotting": spotting.__main__, "launch": launch.__main__,
              "pretrain": pretrain.__main__, "finetune": finetune.__main__}
    commands = {f"{stage} {name}" for stage, module in stages.items() for name in module.COMMANDS}
    assert commands - covered == set()
