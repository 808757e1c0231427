"""The detector reader: temporal detectors (spotting.detector.model) over a video's channels, fitted on training
subjects only, saved in the spotter folder `python -m spotting spot` reads.

Input: a video's channels (spotting.channels: any of the sets, read in channel-name order), put on the detector's
time grid and standardised with the training videos' statistics (spotting.detector.inputs). The channels are
read by one detector (`groups` empty: early fusion) or by one detector per group of channel sets (late fusion:
e.g. the flow cues and the encoder features apart), whose outputs are mixed with weights chosen on the inner
folds. The weight grid holds each group alone, so a group that does not help the training subjects' inner folds
gets weight 0: a fold can never be made worse by a channel set on the subjects it learns from.
Fitting (`fit_reader`): the training subjects are split leave-one-subject-out again (inner folds); an inner
detector per group and inner fold scores its held-out training subject at each training length in `steps_grid`;
the length, the group weights, each class's suppression (`nms_grid`) and score threshold are chosen where the
pooled inner F1 is best, from those out-of-sample boxes only. Then `final_models` detectors per group (with a
weight above 0) are trained on every training subject for that length; a group's outputs are averaged before
they are mixed. Nothing about a subject outside `items` is read.
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
from tqdm import tqdm

from data.common.atomic import atomic_path, write_json
from data.common.checksums import check_folder, folder_record
from data.common.config import Config, build, setting, to_dict
from data.common.errors import ConfigError, DataError
from data.common.tables import empty_intervals
from data.faces.stabilise import grid_length
from spotting import intervals as iv
from spotting.channels.vocabulary import CHANNEL_SETS, Channel, ChannelSet, VideoFeatures
from spotting.detector import decode as dd
from spotting.detector import model as dt
from spotting.detector.inputs import Normaliser, events_on_grid
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
    final_models: int = setting(1, ge=1)  # detectors trained on all training subjects per group, outputs averaged
    encoder_pca: int = setting(64, ge=0)  # encoder channels -> this many principal components (0: all)
    # late fusion: one detector per group of channel sets, e.g. [[cues, flow], [encoder]]; empty: one detector
    # reads every channel set of the config (early fusion)
    groups: list[list[ChannelSet]] = dataclasses.field(default_factory=list)
    weight_step: float = setting(0.25, gt=0, le=1)  # the group weights tried: multiples of this summing to 1

    def check(self) -> None:
        if not self.steps_grid:
            raise ConfigError("needs at least one training length", field="steps_grid", fix="e.g. [200, 400]")
        for spec in self.nms_grid or [None]:
            try:
                dd.parse_nms(spec or "")
            except ValueError as e:
                raise ConfigError(str(e), field="nms_grid", fix="e.g. [soft:0.5, hard:0.3]") from None
        if any(not g for g in self.groups):
            raise ConfigError("a group needs at least one channel set", field="groups",
                              fix="e.g. [[cues, flow], [encoder]]")
        if abs(round(1 / self.weight_step) * self.weight_step - 1) > 1e-9:
            raise ConfigError(f"{self.weight_step} does not divide 1", field="weight_step", fix="e.g. 0.25 or 0.5")


# ---- groups and their mixing -----------------------------------------------------------------------------------

def group_channels(item: VideoFeatures, sets: tuple[str, ...], groups: list[list[str]]) -> list[list[Channel]]:
    """The channels each detector reads: one group of every set read, or the configured groups."""
    out = [item.all_channels(tuple(g)) for g in (groups or [list(sets)])]
    empty = [list(g) for g, channels in zip(groups or [list(sets)], out) if not channels]
    if empty:
        raise DataError(f"no channels of sets {empty} to detect from", field="channels",
                        fix=f"name channel sets the videos have, of {list(CHANNEL_SETS)}")
    return out


def weight_grid(groups: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of multiples of `step` summing to 1, the first group's heaviest first (ties in inner
    F1 then go to it: the flow cues, when they come first)."""
    units = round(1 / step)

    def split(total: int, n: int):
        if n == 1:
            yield (total,)
            return
        for first in range(total, -1, -1):
            for rest in split(total - first, n - 1):
                yield (first,) + rest

    return [tuple(u * step for u in w) for w in split(units, groups)]


def mix(raws: list, weights) -> list[tuple[np.ndarray, np.ndarray]]:
    """Several groups' raw outputs of one sequence (each an ensemble average) mixed with `weights`."""
    used = [(w, r) for w, r in zip(weights, raws) if w > 0]
    if len(used) == 1:
        return used[0][1]
    return [(sum(w * r[i][0] for w, r in used), sum(w * r[i][1] for w, r in used)) for i in range(len(used[0][1]))]


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


def candidates(runs: list[dict[str, list]], weights, items: list[VideoFeatures], dcfg: dt.DetectorConfig) -> dict:
    """Each group's raw outputs of each video ({video: raw}, one dict per group) mixed -> unsuppressed candidates
    {video: [M, 4]}."""
    return {it.video: dd.decode(mix([r[it.video] for r in runs], weights),
                                grid_length(it.num_frames, it.fps, dcfg.rate_hz), dcfg) for it in items}


# ---- the fitted reader -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class DetectorReader:
    """A fitted detector reader: its config, each group's input channels and their normalisation, the choices made
    on the inner folds (training length, group weights, per-class suppression and threshold) and each group's
    trained detectors (none for a group of weight 0)."""
    config: DetectorReaderConfig
    norms: list[Normaliser]
    selection: dict
    models: list[list[dt.TemporalDetector]]

    READS: ClassVar[tuple[str, ...]] = CHANNEL_SETS  # every set: it learns which channel speaks for which type
    FORMAT: ClassVar[int] = 2  # 1: one group; channel sets named "model" and "cue", the selection's "checkpoint"
    FILE: ClassVar[str] = "detector.json"

    @staticmethod
    def fit(items: list[VideoFeatures], gt: pd.DataFrame, sets: tuple[str, ...], cfg) -> DetectorReader:
        """Fitted on `items` (training subjects only) reading the channel sets `sets` (fit_reader)."""
        return fit_reader(items, gt, sets, cfg)

    @property
    def channel_sets(self) -> set[str]:
        return {c.set for norm in self.norms for c in norm.channels}

    @property
    def weights(self) -> list[float]:
        return self.selection.get("weights", [1.0])

    def raw(self, item: VideoFeatures) -> list:
        """The mixed raw outputs of one video: each group's ensemble average, weighted."""
        rate = self.config.detector.rate_hz
        raws = [dd.average_outputs([dt.raw_outputs(m, norm.apply(item, rate)) for m in models]) if w > 0 else None
                for norm, models, w in zip(self.norms, self.models, self.weights)]
        return mix(raws, self.weights)

    def boxes(self, item: VideoFeatures) -> np.ndarray:
        """Suppressed boxes [M, 4] (onset_s, end_s, score, class) of one video."""
        dcfg = self.config.detector
        cand = dd.decode(self.raw(item), grid_length(item.num_frames, item.fps, dcfg.rate_hz), dcfg)
        return dd.suppress_all(cand, self.selection["nms"])

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
        groups = [{"channels": [dataclasses.asdict(c) for c in n.channels], "mean": n.mean, "std": n.std,
                   "basis": n.basis, "models": len(m)} for n, m in zip(self.norms, self.models)]
        return {"format": self.FORMAT, "config": to_dict(self.config), "selection": self.selection, "groups": groups}

    def save(self, folder) -> Path:
        """FOLDER/detector_<group>_<i>.safetensors, then FOLDER/detector.json (last: with their checksums)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for g, models in enumerate(self.models):
            for i, model in enumerate(models):
                names.append(f"detector_{g}_{i}.safetensors")
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
        missing = [k for k in ("files", "config", "groups", "selection") if k not in raw]
        if missing:  # written by a version before late fusion (no "groups"), or cut short by hand
            raise DataError(f"no {', '.join(missing)} in the detector file (written by another version?)", path=path,
                            field=missing[0], fix=fix)
        check_folder(folder, raw["files"], fix)
        cfg = build(DetectorReaderConfig, raw["config"], str(path), "config.")
        norms, models = [], []
        for g, group in enumerate(raw["groups"]):
            norms.append(Normaliser([Channel(**c) for c in group["channels"]], group["mean"], group["std"],
                                    group["basis"]))
            models.append([_load_detector(folder / f"detector_{g}_{i}.safetensors", norms[-1].width, cfg.detector)
                           for i in range(group["models"])])
        return cls(cfg, norms, raw["selection"], models)


def _load_detector(path: Path, width: int, dcfg: dt.DetectorConfig) -> dt.TemporalDetector:
    model = dt.TemporalDetector(width, dcfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


# ---- fitting ---------------------------------------------------------------------------------------------------

def inner_runs(items: list[VideoFeatures], gt: pd.DataFrame, groups: list[list[Channel]],
               cfg: DetectorReaderConfig) -> dict[int, list[dict]]:
    """{training length: per group {video: raw outputs}}: every training subject scored by detectors trained on
    the other training subjects (inner LOSO)."""
    subjects = sorted({it.subject for it in items})
    if len(subjects) < 2:
        log.warning("one training subject: the detector's choices are made on its own training videos")
        splits = [(subjects, subjects[0])]
    else:
        splits = [(list(s.train), s.test) for s in loso_splits(subjects)]
    runs: dict[int, list[dict]] = {c: [{} for _ in groups] for c in cfg.steps_grid}
    for train_subjects, test in tqdm(splits, desc="detector inner folds", unit="fold", leave=False):
        train = [it for it in items if it.subject in train_subjects]
        test_items = [it for it in items if it.subject == test]
        for g, channels in enumerate(groups):
            run = train_and_score(train, test_items, gt, channels, cfg, 0, sorted(cfg.steps_grid))
            for c in cfg.steps_grid:
                runs[c][g].update(run[c])
    return runs


def inner_selection(items: list[VideoFeatures], gt: pd.DataFrame, groups: list[list[Channel]],
                    cfg: DetectorReaderConfig) -> dict:
    """Training length, group weights, per-class suppression and threshold from inner-fold detectors."""
    runs = inner_runs(items, gt, groups, cfg)
    weights = weight_grid(len(groups), cfg.weight_step)
    choices = {}
    for steps in cfg.steps_grid:
        for w in weights:
            cands = candidates(runs[steps], w, items, cfg.detector)
            choices[steps, w] = choose(cands, items, gt, cfg.nms_grid, cfg.threshold_grid, cfg.micro_inside_macro)
    # ties: the first group's heavier weight (the grid's order), then the shorter training
    best = max(choices, key=lambda key: (choices[key]["inner_overall_f1"], key[1][0], -key[0]))

    def name(key):
        return str(key[0]) if len(groups) == 1 else f"{key[0]}@" + ",".join(f"{v:g}" for v in key[1])

    return {"steps": best[0], "weights": list(best[1]), **choices[best],
            "tried": {name(key): round(choice["inner_overall_f1"], 4) for key, choice in choices.items()}}


def fit_reader(items: list[VideoFeatures], gt: pd.DataFrame, sets: tuple[str, ...],
               cfg: DetectorReaderConfig) -> DetectorReader:
    """Inner-fold choices, then `final_models` detectors per used group on every video of `items` (training
    subjects only: only the rows of `gt` whose video is in `items` are read)."""
    if not items:
        raise DataError("no training videos to fit the detector on", field="detector",
                        fix="each fold needs at least one training subject")
    gt = gt[gt["video"].isin({it.video for it in items})]
    groups = group_channels(items[0], sets, cfg.groups)
    selection = inner_selection(items, gt, groups, cfg)
    rate = cfg.detector.rate_hz
    events = [events_on_grid(gt[gt["video"] == it.video], it.fps, rate) for it in items]
    norms, models = [], []
    for channels, w in zip(groups, selection["weights"]):
        norms.append(Normaliser.fit(items, channels, rate, cfg.encoder_pca))
        xs = [norms[-1].apply(it, rate) for it in items]
        models.append([dt.train_detector(xs, events, dataclasses.replace(cfg.detector, seed=FINAL_SEED + i),
                                         selection["steps"]).eval() for i in range(cfg.final_models)] if w > 0 else [])
    return DetectorReader(cfg, norms, selection, models)
