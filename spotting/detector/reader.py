"""The detector reader: temporal detectors (spotting.detector.model) over a video's channels, fitted on training
subjects only, saved in the spotter folder `python -m spotting spot` reads.

Input: a video's channels (spotting.channels: any of the sets, read in channel-name order), put on the detector's
time grid (`on_grid`: frames averaged into grid steps, or
interpolated when the video is slower than the grid) and standardised with the training videos' statistics.
Fitting (`fit_reader`): the training subjects are split leave-one-subject-out again (inner folds); an inner
detector per inner fold scores its held-out training subject at each training length in `steps_grid`; the
length, each class's suppression (`nms_grid`) and score threshold are chosen where the pooled inner F1 is best,
from those out-of-sample boxes only. Then `final_models` detectors are trained on every training subject for that
length; their outputs are averaged before decoding. Nothing about a subject outside `items` is read.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from safetensors.torch import load_file, save_file
from sklearn.decomposition import PCA

from data.common.atomic import atomic_path, write_json
from data.common.checksums import check_folder, folder_record
from data.common.config import Config, build, setting, to_dict
from data.common.errors import ConfigError, DataError
from data.common.tables import empty_intervals
from data.faces.stabilise import grid_length
from spotting import intervals as iv
from spotting.channels.encoder import per_video_standardise
from spotting.channels.vocabulary import CHANNEL_SETS, ENCODER, Channel, VideoFeatures, design
from spotting.detector import decode as dd
from spotting.detector import model as dt
from spotting.detector.select import choose
from spotting.evaluation.protocol import loso_splits

log = logging.getLogger(__name__)
FINAL_SEED = 100  # final detectors use seeds FINAL_SEED + i, inner ones 0: no two share an initialisation


@dataclasses.dataclass
class DetectorReaderConfig(Config):
    detector: dt.DetectorConfig = dataclasses.field(default_factory=dt.DetectorConfig)
    steps_grid: list[int] = setting(factory=lambda: [100, 200, 300, 400], ge=1)  # training lengths tried
    # per class; on a tie the first wins: hard NMS leaves no near-copies of a box, whose soft-NMS scores
    # would otherwise depend on how the final detector's scores are calibrated against the inner ones'
    nms_grid: list[str] = dataclasses.field(default_factory=lambda: ["hard:0.3", "soft:0.5"])
    threshold_grid: int = setting(40, ge=2)  # score thresholds tried: quantiles of the inner boxes' scores
    micro_inside_macro: float = setting(0.5, ge=0, le=1)
    final_models: int = setting(1, ge=1)  # detectors trained on all training subjects, outputs averaged
    encoder_pca: int = setting(64, ge=0)  # encoder channels -> this many principal components (0: all)

    def check(self) -> None:
        if not self.steps_grid:
            raise ConfigError("needs at least one training length", field="steps_grid", fix="e.g. [200, 400]")
        for spec in self.nms_grid or [None]:
            try:
                dd.parse_nms(spec or "")
            except ValueError as e:
                raise ConfigError(str(e), field="nms_grid", fix="e.g. [soft:0.5, hard:0.3]") from None


# ---- inputs on the grid ----------------------------------------------------------------------------------------

def on_grid(x: np.ndarray, fps: float, rate_hz: float) -> np.ndarray:
    """Per-frame channels [T, C] -> [C, N] on the grid: the mean of the frames inside each grid step (a video
    at the grid rate is unchanged), or linear interpolation at the step centres for a slower video."""
    t, n = x.shape[0], grid_length(x.shape[0], fps, rate_hz)
    if fps >= rate_hz:
        step = np.minimum((np.arange(t) * rate_hz / fps).astype(np.int64), n - 1)
        total = np.zeros((n, x.shape[1]))
        np.add.at(total, step, x)
        count = np.bincount(step, minlength=n)[:, None]
        return (total / np.maximum(count, 1)).T.astype(np.float32)
    centres = (np.arange(n) + 0.5) / rate_hz * fps - 0.5
    return np.stack([np.interp(centres, np.arange(t), x[:, c]) for c in range(x.shape[1])]).astype(np.float32)


PCA_STEPS = 4000  # time steps (evenly spaced) the principal directions are computed from: enough for 64


def principal_directions(x: np.ndarray, k: int) -> np.ndarray:
    """[k, C]: the leading principal directions of channels x [C, N], each signed so that its largest loading is
    positive (scikit-learn's PCA, svd_flip). The covariance_eigh solver is the exact eigendecomposition of the
    [C, C] covariance; scikit-learn's default here would be the randomized one, an approximation."""
    x = x[:, np.linspace(0, x.shape[1] - 1, min(x.shape[1], PCA_STEPS)).astype(np.int64)]
    if k > x.shape[1]:
        raise DataError(f"{k} principal directions need at least {k} time steps of training video, have "
                        f"{x.shape[1]}", field="detector.encoder_pca", fix="lower it, or add training videos")
    return PCA(k, svd_solver="covariance_eigh").fit(x.T).components_.astype(np.float32)


@dataclasses.dataclass
class Normaliser:
    """The channels a detector reads and how they become its input [C, N] on the grid. Encoder channels come
    first: with `basis`, projected on the leading principal directions of the training videos (thousands of
    pooled features, strongly correlated, would otherwise dominate the detector's first layer and its cost) and
    standardised per video again. Every other channel is standardised with the training videos' mean and std."""
    channels: list[Channel]
    mean: list[float]  # of the channels that are not encoder channels, in `channels` order
    std: list[float]
    basis: list[list[float]] | None = None  # [k, encoder channels]

    @property
    def groups(self) -> tuple[list[Channel], list[Channel]]:
        return ([c for c in self.channels if c.set == ENCODER], [c for c in self.channels if c.set != ENCODER])

    @property
    def width(self) -> int:
        encoder, other = self.groups
        return (len(self.basis) if self.basis else len(encoder)) + len(other)

    @classmethod
    def fit(cls, items: list[VideoFeatures], channels: list[Channel], rate_hz: float, pca: int = 0) -> Normaliser:
        norm = cls(channels, [], [])
        encoder, other = norm.groups
        if other:
            cat = np.concatenate([on_grid(design(it, other), it.fps, rate_hz) for it in items], 1)
            norm.mean, norm.std = cat.mean(1).tolist(), (cat.std(1) + 1e-6).tolist()
        if encoder and 0 < pca < len(encoder):
            cat = np.concatenate([on_grid(design(it, encoder), it.fps, rate_hz) for it in items], 1)
            norm.basis = principal_directions(cat, pca).tolist()
        return norm

    def apply(self, item: VideoFeatures, rate_hz: float) -> np.ndarray:
        encoder, other = self.groups
        parts = []
        if encoder:
            x = on_grid(design(item, encoder), item.fps, rate_hz)
            parts.append(per_video_standardise((np.asarray(self.basis, np.float32) @ x).T).T if self.basis else x)
        if other:
            x = on_grid(design(item, other), item.fps, rate_hz)
            parts.append((x - np.array(self.mean)[:, None]) / np.array(self.std)[:, None])
        return np.concatenate(parts, 0).astype(np.float32)


def events_on_grid(gt_video: pd.DataFrame, fps: float, rate_hz: float) -> np.ndarray:
    """A video's ground-truth rows -> [E, 3] (onset step, end step exclusive, class index) on the grid."""
    rows = [(int(r.onset) / fps * rate_hz, (int(r.offset) + 1) / fps * rate_hz, dt.CLASSES.index(str(r.type)))
            for r in gt_video.itertuples(index=False)]
    return np.asarray(rows, np.float32).reshape(-1, 3)


def train_and_score(train: list[VideoFeatures], test: list[VideoFeatures], gt: pd.DataFrame, channels, cfg,
                    seed: int, at: list[int]) -> dict[int, dict[str, list]]:
    """{training length: {test video: raw outputs}} of one detector trained on `train` (normalised on it)."""
    rate = cfg.detector.rate_hz
    norm = Normaliser.fit(train, channels, rate, cfg.encoder_pca)
    xs = [norm.apply(it, rate) for it in train]
    events = [events_on_grid(gt[gt["video"] == it.video], it.fps, rate) for it in train]
    xs_test = [norm.apply(it, rate) for it in test]
    out: dict[int, dict[str, list]] = {}

    def score(step, model):
        out[step] = {it.video: dt.raw_outputs(model, x) for it, x in zip(test, xs_test)}

    dt.train_detector(xs, events, dataclasses.replace(cfg.detector, seed=seed), max(at), score, tuple(at))
    return out


def candidates(runs: list[dict[str, list]], items: list[VideoFeatures], dcfg: dt.DetectorConfig) -> dict:
    """Several detectors' raw outputs of each video -> averaged -> unsuppressed candidates {video: [M, 4]}."""
    return {it.video: dd.decode(dd.average_outputs([r[it.video] for r in runs]),
                                grid_length(it.num_frames, it.fps, dcfg.rate_hz), dcfg) for it in items}


# ---- the fitted reader -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class DetectorReader:
    """A fitted detector reader: its config, input channels and their normalisation, the choices made on the
    inner folds (training length, per-class suppression and threshold) and the trained detectors."""
    config: DetectorReaderConfig
    norm: Normaliser
    selection: dict
    models: list[dt.TemporalDetector]

    READS: ClassVar[tuple[str, ...]] = CHANNEL_SETS  # every set: it learns which channel speaks for which type
    FORMAT: ClassVar[int] = 2  # 1: channel sets named "model" and "cue", the selection's "checkpoint"
    FILE: ClassVar[str] = "detector.json"

    @staticmethod
    def fit(items: list[VideoFeatures], gt: pd.DataFrame, sets: tuple[str, ...], cfg) -> DetectorReader:
        """Fitted on `items` (training subjects only) reading the channel sets `sets` (fit_reader)."""
        return fit_reader(items, gt, sets, cfg)

    @property
    def channel_sets(self) -> set[str]:
        return {c.set for c in self.norm.channels}

    def boxes(self, item: VideoFeatures) -> np.ndarray:
        """Suppressed boxes [M, 4] (onset_s, end_s, score, class) of one video."""
        dcfg = self.config.detector
        x = self.norm.apply(item, dcfg.rate_hz)
        cand = candidates([{item.video: dt.raw_outputs(m, x)} for m in self.models], [item], dcfg)
        return dd.suppress_all(cand[item.video], self.selection["nms"])

    def curves(self, item: VideoFeatures) -> dict[str, np.ndarray]:
        """Per-frame score of each type: the best suppressed box covering the frame."""
        boxes = self.boxes(item)
        out = {}
        for k, kind in enumerate(dt.CLASSES):
            curve = np.zeros(item.num_frames, np.float32)
            mine = boxes[boxes[:, 3] == k]
            for (on, off), score in zip(dd.frame_spans(mine, item.fps, item.num_frames), mine[:, 2]):
                curve[on:off + 1] = np.maximum(curve[on:off + 1], score)
            out[kind] = curve
        return out

    def spot_item(self, item: VideoFeatures) -> list[iv.Interval]:
        return dd.to_intervals(self.boxes(item), item.fps, item.num_frames, self.selection["threshold"],
                               self.config.micro_inside_macro)

    def predict(self, items: list[VideoFeatures]) -> pd.DataFrame:
        frames = [empty_intervals(with_score=True)]
        frames += [iv.to_frame(self.spot_item(it), it.subject, it.video) for it in items]
        return pd.concat(frames, ignore_index=True)

    def to_dict(self) -> dict:
        return {"format": self.FORMAT, "config": to_dict(self.config), "selection": self.selection,
                "channels": [dataclasses.asdict(c) for c in self.norm.channels],
                "mean": self.norm.mean, "std": self.norm.std, "basis": self.norm.basis}

    def save(self, folder) -> Path:
        """FOLDER/detector_<i>.safetensors, then FOLDER/detector.json (last: with their checksums)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for i, model in enumerate(self.models):
            names.append(f"detector_{i}.safetensors")
            with atomic_path(folder / names[-1]) as tmp:
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        write_json(folder / self.FILE, {**self.to_dict(), "files": folder_record(folder, names)})
        return folder

    @classmethod
    def load(cls, folder) -> DetectorReader:
        folder = Path(folder)
        path = folder / cls.FILE
        fix = "refit it: rerun `python -m spotting loso` with final_model=true"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"not a detector file ({type(e).__name__}: {e})", path=path, fix=fix) from None
        if raw.get("format") != cls.FORMAT:
            raise DataError(f"detector format {raw.get('format')}; this version reads {cls.FORMAT}", path=path,
                            field="format", fix=fix)
        check_folder(folder, raw["files"], fix)
        cfg = build(DetectorReaderConfig, raw["config"], str(path), "config.")
        norm = Normaliser([Channel(**c) for c in raw["channels"]], raw["mean"], raw["std"], raw["basis"])
        models = []
        for name in sorted(raw["files"]):
            model = dt.TemporalDetector(norm.width, cfg.detector)
            model.load_state_dict(load_file(str(folder / name)))
            models.append(model.eval())
        return cls(cfg, norm, raw["selection"], models)


def inner_selection(items: list[VideoFeatures], gt: pd.DataFrame, channels: list[Channel],
                    cfg: DetectorReaderConfig) -> dict:
    """Training length, per-class suppression and threshold from leave-one-subject-out detectors over `items`."""
    subjects = sorted({it.subject for it in items})
    if len(subjects) < 2:
        log.warning("one training subject: the detector's thresholds are chosen on its own training videos")
        splits = [(subjects, subjects[0])]
    else:
        splits = [(list(s.train), s.test) for s in loso_splits(subjects)]
    cands: dict[int, dict] = {c: {} for c in cfg.steps_grid}
    for train_subjects, test in splits:
        train = [it for it in items if it.subject in train_subjects]
        test_items = [it for it in items if it.subject == test]
        run = train_and_score(train, test_items, gt, channels, cfg, 0, sorted(cfg.steps_grid))
        for c in cfg.steps_grid:
            cands[c].update(candidates([run[c]], test_items, cfg.detector))
    choices = {c: choose(cands[c], items, gt, cfg.nms_grid, cfg.threshold_grid, cfg.micro_inside_macro)
               for c in cfg.steps_grid}
    best = max(cfg.steps_grid, key=lambda c: (choices[c]["inner_overall_f1"], -c))
    return {"steps": best, **choices[best],
            "tried": {str(c): round(choices[c]["inner_overall_f1"], 4) for c in cfg.steps_grid}}


def fit_reader(items: list[VideoFeatures], gt: pd.DataFrame, sets: tuple[str, ...],
               cfg: DetectorReaderConfig) -> DetectorReader:
    """Inner-fold choices, then `final_models` detectors on every video of `items` (training subjects only:
    only the rows of `gt` whose video is in `items` are read)."""
    if not items:
        raise DataError("no training videos to fit the detector on", field="detector",
                        fix="each fold needs at least one training subject")
    gt = gt[gt["video"].isin({it.video for it in items})]
    channels = items[0].all_channels(sets)
    if not channels:
        raise DataError(f"no channels of sets {list(sets)} to detect from", field="channels",
                        fix=f"name channel sets the videos have, of {list(CHANNEL_SETS)}")
    selection = inner_selection(items, gt, channels, cfg)
    rate = cfg.detector.rate_hz
    norm = Normaliser.fit(items, channels, rate, cfg.encoder_pca)
    xs = [norm.apply(it, rate) for it in items]
    events = [events_on_grid(gt[gt["video"] == it.video], it.fps, rate) for it in items]
    models = [dt.train_detector(xs, events, dataclasses.replace(cfg.detector, seed=FINAL_SEED + i),
                                selection["steps"]).eval() for i in range(cfg.final_models)]
    return DetectorReader(cfg, norm, selection, models)
