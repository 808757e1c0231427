"""The pretraining input pipeline: WebDataset shards -> decoded, cropped, masked, batched clips.

Stages (each a generator over the previous one, run inside every DataLoader worker):
  shard list (shuffled per epoch, split by rank then by worker; or resampled with replacement)
  -> shard streams (data.common.storage: a local file or a remote object read in ranged GETs, no local copy)
  -> tar samples (webdataset; a broken tar is skipped through the handler, counted; a missing one stops)
  -> sample shuffle buffer (seeded: the stream depends only on seed, epoch, rank and worker)
  -> decode (decord, from the in-memory mp4, only the frames sampled) -> k views (crop + mask each)
  -> batches collated in the worker (uint8 or normalised float32 video, bool mask, keys, corrupt count).

Batch: video [B, 3, T, H, W] (float32 normalised, or uint8 with `output: uint8` to normalise on the device via
data.clips.augment.normalise; the uint8 tensor has channels-last strides; with a `view`, the float32 motion view
of stabilised grey clips, data.faces.motion_view, made here so the train step only moves tensors), mask bool
[B, N] (True = masked),
key list[str], corrupt (running count of skipped samples in the worker that made the batch), worker (that
worker's id). CorruptTally sums the counts over workers.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import random
from itertools import islice
from typing import Literal

import numpy as np
from torch.utils.data import IterableDataset

from data.clips.augment import VIDEOMAE_SCALES, crop_box, crop_resize, normalise
from data.clips.geometry import ClipGeometry
from data.clips.targets import LOADER_TARGETS, flow_target, make_target
from data.common.config import Config, setting
from data.common.errors import ConfigError, DataError
from data.common.storage import open_read
from data.common.video_io import read_frames
from data.faces.motion_view import MotionViewConfig, motion_view
from data.shards.format import DEFAULT_SHARDS, read_manifest, shard_urls

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoaderConfig(Config):
    """How clips are read and augmented. What they are cut to (frames, size, token grid, masks) is the model's:
    every loader function takes a ClipGeometry (pretrain's ModelConfig.geometry) beside this config."""
    shards: str = DEFAULT_SHARDS  # shard set of `python -m data pack` (has manifest.json): folder or URL
    batch_size: int = setting(8, ge=1)  # per rank
    num_workers: int = setting(2, ge=0)  # DataLoader worker processes per rank (0: decode in the calling process)
    # stored frames between sampled frames (1 for clips packed with frame_step > 1)
    frame_stride: int = setting(4, ge=1)
    # when given, each decoded clip draws its stride from these instead: one per spotter granularity, so a
    # pretrained encoder has seen both its short (micro) and its long (macro) windows
    frame_strides: list[int] = setting(factory=list, ge=1)
    scales: tuple[float, ...] = setting(VIDEOMAE_SCALES, gt=0, le=1)  # multi-scale crop: fractions of the short side
    max_distort: int = setting(1, ge=0)
    repeats: int = setting(1, ge=1)  # views (crop + mask) per decoded clip: VideoMAE V2 repeated sampling
    partial_decode: bool = True  # decode only the sampled frames (False: whole clip, then pick; for benchmarks)
    output: Literal["float", "uint8"] = "float"
    shuffle_shards: bool = True
    shuffle_buffer: int = setting(256, ge=0)  # samples; 0 turns sample shuffling off
    resampled: bool = False  # draw shards with replacement forever; epochs are epoch_samples long
    epoch_samples: int = setting(0, ge=0)  # views per rank per epoch in resampled mode
    drop_last: bool = True
    pin_memory: bool = True  # used only when CUDA is available
    prefetch_factor: int = setting(2, ge=1)
    max_corrupt_fraction: float = setting(0.01, ge=0, le=1)  # stop with DataError when a worker skips more ...
    corrupt_min_samples: int = setting(200, ge=1)  # ... of at least this many samples (one bad sample is no verdict)
    seed: int = 0

    def check(self) -> None:
        if not self.scales:
            raise ConfigError("needs at least one crop scale", field="scales", fix="e.g. [1.0, 0.875, 0.75, 0.66]")
        if self.resampled and self.epoch_samples < self.batch_size:
            raise ConfigError(f"resampled mode needs epoch_samples >= batch_size ({self.batch_size}), got "
                              f"{self.epoch_samples}", field="epoch_samples", fix="set epoch_samples (views per rank)")


# ---- corrupt samples -------------------------------------------------------------------------------------

class CorruptCounter:
    """Per-worker count of skipped samples, with the budget that stops a run on a badly broken shard set.

    A shard that stops being readable (truncated, garbage) counts once, however many errors its tail raises:
    the number of samples lost in the tail is unknown. The incomplete sample cut at that point is not counted
    again.
    """

    def __init__(self, shard_set: str, max_fraction: float, min_samples: int):
        self.shard_set, self.max_fraction, self.min_samples = shard_set, max_fraction, min_samples
        self.seen = 0
        self.corrupt = 0
        self.broken_urls: set[str] = set()

    def skip(self, key, url, reason: str) -> None:
        self.corrupt += 1
        log.warning("skipping corrupt sample %s in %s: %s", key, url, reason)
        if self.corrupt > self.max_fraction * max(self.seen, self.min_samples):
            raise DataError(f"{self.corrupt} corrupt of {self.seen} samples read by this worker exceeds "
                            f"max_corrupt_fraction={self.max_fraction}", path=self.shard_set,
                            field="max_corrupt_fraction",
                            fix="check the shards with data.shards.format.verify_shards or re-pack them")

    def tar_error(self, exn: Exception, url: str) -> bool:
        """webdataset handler (bound to the shard's url): a tar that cannot be read on loses its tail, not
        the epoch."""
        if url in self.broken_urls:
            log.debug("further error in broken shard %s: %s", url, exn)
        else:
            self.broken_urls.add(url)
            self.skip("<shard tail>", url, f"{type(exn).__name__}: {str(exn.args[0] if exn.args else exn)[:160]}")
        return True  # go on with the next member / shard

    def incomplete(self, sample: dict) -> bool:
        """True (and logged) when an incomplete sample is the casualty of an already counted broken shard."""
        if sample.get("__url__") in self.broken_urls and not ("mp4" in sample and "json" in sample):
            log.warning("dropping incomplete sample %s at the broken end of %s", sample.get("__key__"),
                        sample.get("__url__"))
            return True
        return False


class CorruptTally:
    """For the training loop: total skipped samples over all workers, from the running count in each batch."""

    def __init__(self):
        self.by_worker: dict[int, int] = {}

    def update(self, batch: dict) -> int:
        self.by_worker[batch["worker"]] = batch["corrupt"]
        return self.total

    @property
    def total(self) -> int:
        return sum(self.by_worker.values())


# ---- stages ----------------------------------------------------------------------------------------------

def _worker() -> tuple[int, int]:
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class ShardList(IterableDataset):
    """Stage 0: the shard urls this (rank, worker) reads this epoch, as webdataset's dict(url=...).

    Every rank and worker permutes the list with the same seed + epoch, then takes its own slice, so one epoch
    reads every shard exactly once across ranks x workers. The epoch advances on each pass (persistent
    workers each advance their own copy in step).
    """

    def __init__(self, urls: list[str], rank: int, world_size: int, shuffle: bool, seed: int, epoch: int = 0):
        super().__init__()
        self.urls, self.rank, self.world_size = list(urls), rank, world_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch

    def __iter__(self):
        urls = list(self.urls)
        if self.shuffle:
            random.Random(self.seed * 100003 + self.epoch).shuffle(urls)
        self.epoch += 1
        worker, num_workers = _worker()
        mine = islice(islice(urls, self.rank, None, self.world_size), worker, None, num_workers)
        for url in mine:
            yield {"url": url}


class ResampledShardList(ShardList):
    """Stage 0, resampled mode: shards drawn with replacement forever, a different stream per rank/worker."""

    def __iter__(self):
        worker, _ = _worker()
        rng = random.Random(hash((self.seed, self.epoch, self.rank, worker)))
        self.epoch += 1
        while True:
            yield {"url": rng.choice(self.urls)}


def open_shards(sources):
    """Stage: add an open stream to each dict(url=...). A shard the manifest lists that has gone missing is
    an error naming it, not a corrupt sample: the shard set itself is damaged (or the wrong one is named)."""
    for source in sources:
        url = source["url"]
        try:
            stream = open_read(url)
        except FileNotFoundError:
            raise DataError("shard listed in the manifest is missing", path=url,
                            fix="restore the file or re-pack into a new folder") from None
        with stream:
            yield dict(source, stream=stream)  # consumed whole before the next one is asked for


def tar_samples(counter: CorruptCounter):
    """Stage: shard streams (open_shards) -> grouped samples, by webdataset's tar reading; its errors are
    counted against the shard they came from."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def stage(sources):
        for source in open_shards(sources):
            handler = functools.partial(counter.tar_error, url=source["url"])
            yield from group_by_keys(tar_file_expander([source], handler=handler), handler=handler)

    return stage


class SampleShuffle:
    """Stage: webdataset's shuffle buffer, seeded by (seed, rank, worker, epoch) so a stream is reproducible
    (a resumed run can replay it) yet differs between workers and epochs."""

    def __init__(self, bufsize: int, seed: int, rank: int, epoch: int = 0):
        self.bufsize, self.seed, self.rank, self.epoch = bufsize, seed, rank, epoch

    def __call__(self, samples):
        import webdataset as wds

        worker, _ = _worker()
        rng = random.Random(hash((self.seed, self.rank, worker, self.epoch)))
        self.epoch += 1
        return wds.shuffle(self.bufsize, initial=min(self.bufsize, 64), rng=rng)(samples)


def sampled_span(frames: int, stride: int) -> int:
    """Stored frames that `frames` sampled frames `stride` apart cover."""
    return (frames - 1) * stride + 1


def sample_indices(num_stored: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """`frames` indices `stride` apart at a random start (temporal jitter)."""
    span = sampled_span(frames, stride)
    if num_stored < span:
        raise DataError(f"clip has {num_stored} frames, sampling needs {span}", field="num_frames",
                        fix="lower data.frame_stride or pack longer clips")
    start = int(rng.integers(0, num_stored - span + 1))
    return start + stride * np.arange(frames)


def decode_sample(sample: dict, cfg: LoaderConfig, frames: int, rng: np.random.Generator) -> np.ndarray:
    """The sampled frames [T, H, W, 3] uint8 of one shard sample (decord, from memory)."""

    if "mp4" not in sample or "json" not in sample:
        raise DataError(f"sample has members {sorted(k for k in sample if not k.startswith('__'))}, "
                        "needs mp4 and json", field="mp4")
    num_stored = int(json.loads(sample["json"])["num_frames"])
    stride = int(rng.choice(cfg.frame_strides)) if cfg.frame_strides else cfg.frame_stride
    indices = sample_indices(num_stored, frames, stride, rng)
    if cfg.partial_decode:
        return read_frames(sample["mp4"], indices.tolist())
    return read_frames(sample["mp4"])[indices]


def _worker_rng(cfg: LoaderConfig, rank: int, epoch: int) -> np.random.Generator:
    worker, _ = _worker()
    return np.random.default_rng([cfg.seed, rank, worker, epoch])


class DecodeViews:
    """Stage: decode each sample once, yield `repeats` views (the decoded frames, a crop box, a mask)."""

    def __init__(self, cfg: LoaderConfig, geometry: ClipGeometry, counter: CorruptCounter, rank: int,
                 epoch: int = 0, clip_size: int | None = None):
        self.cfg, self.geometry, self.counter, self.rank, self.epoch = cfg, geometry, counter, rank, epoch
        self.clip_size = clip_size  # the shard set's packed clip size; None when unknown (no manifest)

    def __call__(self, samples):
        cfg, geometry, counter = self.cfg, self.geometry, self.counter
        rng = _worker_rng(cfg, self.rank, self.epoch)
        self.epoch += 1
        masks = geometry.mask_generator()
        for sample in samples:
            counter.seen += 1
            key = sample.get("__key__", "?")
            if counter.incomplete(sample):
                continue
            try:
                frames = decode_sample(sample, cfg, geometry.frames, rng)
            except Exception as e:  # any decode failure is a corrupt sample: skipped, counted, logged
                counter.skip(key, sample.get("__url__", "?"), f"{type(e).__name__}: {str(e)[:160]}")
                continue
            _, height, width, _ = frames.shape
            if self.clip_size is not None and (height, width) != (self.clip_size, self.clip_size):
                # a stray clip of another size would be silently rescaled by the crop: skip it as corrupt
                counter.skip(key, sample.get("__url__", "?"), f"clip is {height}x{width}, the shard set's "
                             f"clips are {self.clip_size}x{self.clip_size}")
                continue
            for _ in range(cfg.repeats):
                # the crop itself happens at collation, straight into the batch array
                box = crop_box(height, width, geometry.size, rng, cfg.scales, cfg.max_distort)
                yield {"key": key, "frames": frames, "box": box, "mask": masks(rng)}


class Batches:
    """Stage: crop views into one batch array and collate, inside the worker (one transfer per batch)."""

    def __init__(self, cfg: LoaderConfig, geometry: ClipGeometry, counter: CorruptCounter,
                 view: tuple[MotionViewConfig, float] | None = None, target: str | None = None):
        self.cfg, self.geometry, self.counter = cfg, geometry, counter
        self.view = view  # (motion view, the clips' grid rate): the grey clips become that view
        self.target = target  # with a view: the reconstruction target made here too (data.clips.targets)

    def __call__(self, views):
        buf = []
        for view in views:
            buf.append(view)
            if len(buf) == self.cfg.batch_size:
                yield self.collate(buf)
                buf = []
        if buf and not self.cfg.drop_last:
            yield self.collate(buf)

    def collate(self, views: list[dict]) -> dict:
        import torch

        size = self.geometry.size
        frames = np.empty((len(views), self.geometry.frames, size, size, 3), np.uint8)
        for view, out in zip(views, frames):
            crop_resize(view["frames"], view["box"], size, out=out)
        batch = {"mask": torch.from_numpy(np.stack([v["mask"] for v in views])), "key": [v["key"] for v in views],
                 "corrupt": self.counter.corrupt, "worker": _worker()[0]}
        if self.view is None:
            return {"video": self._rgb(torch.from_numpy(frames)), **batch}  # frames [B, T, H, W, 3]
        grey = frames[..., 0]  # stabilised clips store one grey frame in all 3 channels
        video = torch.from_numpy(motion_view(grey, *self.view))
        if self.target is not None:
            batch["target"] = self._target(grey, video, views)
        return {"video": video, **batch}

    def _target(self, grey: np.ndarray, video, views: list[dict]):
        g = self.geometry
        if self.target not in LOADER_TARGETS:
            return make_target(video, self.target, g.tubelet, g.patch, "motion")
        # repeated views of one decoded clip (same frames, same crop) share one flow computation
        keys = [(id(v["frames"]), tuple(v["box"])) for v in views]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        unique = sorted(first.values())
        flows = flow_target(grey[unique], g.tubelet, g.patch, self.target)
        return flows[[unique.index(first[key]) for key in keys]]

    def _rgb(self, video):
        # [B, 3, T, H, W] as a strided view: a CPU transpose would cost as much as the crops; the strides
        # survive the worker -> main hand-over, and normalise() (on the device) returns a contiguous tensor.
        video = video.permute(0, 4, 1, 2, 3)
        return normalise(video) if self.cfg.output == "float" else video


# ---- assembly --------------------------------------------------------------------------------------------

def _rank_world(rank, world_size) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world_size {world_size}", field="rank")
        return rank, world_size
    import webdataset as wds

    rank, world, _, _ = wds.utils.pytorch_worker_info()
    return rank, world


def make_dataset(cfg: LoaderConfig, geometry: ClipGeometry, urls: list[str] | None = None, rank: int | None = None,
                 world_size: int | None = None, epoch: int = 0, view: MotionViewConfig | None = None,
                 target: str | None = None):
    """The pipeline (an IterableDataset of batches of `geometry`'s clips and masks) for one rank; rank/world_size
    default to torch.distributed. `view`: batches hold that motion view of the (stabilised) clips, made at the
    grid rate the manifest records, and (`target`, a data.clips.targets kind) every token's target."""
    import webdataset as wds

    manifest = {}  # the packed clip size and grid rate, when the shard set's manifest says
    if urls is None:
        shard_set, manifest = cfg.shards, read_manifest(cfg.shards)
        urls = shard_urls(cfg.shards, manifest=manifest)
    else:
        shard_set, urls = _common_folder(urls), list(urls)
    if not urls:
        raise DataError("no shards to read", path=shard_set, fix="pack shards first (python -m data pack)")
    rank, world_size = _rank_world(rank, world_size)
    readers = world_size * max(cfg.num_workers, 1)
    if not cfg.resampled and len(urls) < readers:
        log.warning("%d shards for %d ranks x %d workers: some workers get no shard; pack smaller shards",
                    len(urls), world_size, max(cfg.num_workers, 1))
    counter = CorruptCounter(shard_set, cfg.max_corrupt_fraction, cfg.corrupt_min_samples)
    source_cls = ResampledShardList if cfg.resampled else ShardList
    stages = [source_cls(urls, rank, world_size, cfg.shuffle_shards, cfg.seed, epoch),
              tar_samples(counter)]
    if cfg.shuffle_buffer:
        stages.append(SampleShuffle(cfg.shuffle_buffer, cfg.seed, rank, epoch))
    stages += [DecodeViews(cfg, geometry, counter, rank, epoch, packed_size(manifest)),
               Batches(cfg, geometry, counter, view and (view, packed_rate(manifest, shard_set)), target)]
    pipeline = wds.DataPipeline(*stages)
    if cfg.resampled:
        workers = max(cfg.num_workers, 1)
        pipeline = pipeline.with_epoch(max(1, cfg.epoch_samples // (cfg.batch_size * workers)))
    return pipeline


def _common_folder(urls) -> str:
    """The folder (or URL prefix) that holds all of `urls`, to name the shard set in errors."""
    prefix = os.path.commonprefix([str(u) for u in urls]) if urls else "."
    return prefix.rsplit("/", 1)[0] if "/" in prefix else prefix


def packed_size(manifest: dict) -> int | None:
    """The clip size a shard set was packed at (its manifest's config), None when it does not say."""
    size = manifest.get("config", {}).get("size")
    return int(size) if size else None


def packed_rate(manifest: dict, shard_set: str) -> float:
    """The grid rate (Hz) of a stabilised shard set, from its manifest's config: the rate the motion view's lags
    count in, as in the spotter's windows (whatever frames a clip samples from that grid)."""
    packed = manifest.get("config", {})
    rate = packed.get("stabilisation", {}).get("rate_hz")
    if packed.get("crop") != "stabilised" or not rate:
        raise DataError("the motion view needs stabilised clips with their grid rate in the manifest",
                        path=shard_set, field="crop",
                        fix="pack with crop: stabilised (configs/data/pack_stabilised.yaml)")
    return float(rate)


def make_loader(cfg: LoaderConfig, geometry: ClipGeometry, urls: list[str] | None = None, rank: int | None = None,
                world_size: int | None = None, epoch: int = 0, view: MotionViewConfig | None = None,
                target: str | None = None):
    """A torch DataLoader over make_dataset; batches come ready-made from the workers."""
    import torch

    dataset = make_dataset(cfg, geometry, urls, rank, world_size, epoch, view, target)
    extra = {}
    if cfg.num_workers:
        # persistent: each worker's shard list keeps its own epoch counter, in step with the others
        extra = {"persistent_workers": True, "prefetch_factor": cfg.prefetch_factor,
                 "worker_init_fn": _init_worker}
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=cfg.num_workers,
                                       pin_memory=cfg.pin_memory and torch.cuda.is_available(), **extra)


def _init_worker(_):
    import cv2

    cv2.setNumThreads(1)  # one worker process per core: OpenCV's own threads would only contend
