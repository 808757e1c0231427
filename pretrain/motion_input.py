"""The motion input of pretraining (model.input: motion): shards packed with crop: stabilised, shown to the
encoder as the motion view (data.faces.motion_view, the function the spotter's encoder channels call). The
loader's workers make the view (data.shards.loader, `view`), so the train step only moves tensors.

This module checks, on the driver before Ray starts, that a shard set can give that view.
"""
from __future__ import annotations

from data.common.errors import DataError
from data.faces.motion_view import MotionViewConfig
from data.faces.stabilise import StabiliseConfig
from data.shards.format import MANIFEST, read_manifest

SPOTTER_GRID_HZ = StabiliseConfig().rate_hz  # the grid the spotter's encoder channels use by default


def check_motion_shards(shards, view: MotionViewConfig, packed: dict | None = None) -> None:
    """The shard set holds stabilised clips on the spotter's grid, normalised with the lighting the view
    expects; `packed`: the manifest's pack config when the caller has read it already."""
    if packed is None:
        packed = (read_manifest(shards) or {}).get("config", {})
    where = f"{shards}/{MANIFEST}"
    if packed.get("crop") != "stabilised":
        raise DataError(f"model.input is 'motion' but these shards were packed with crop={packed.get('crop')!r}",
                        path=where, field="crop",
                        fix="pack with configs/data/pack_stabilised.yaml (crop: stabilised), or use model.input=rgb")
    rate = packed.get("stabilisation", {}).get("rate_hz")
    if rate != SPOTTER_GRID_HZ:
        raise DataError(f"the shards' grid is {rate} Hz; the spotter's encoder channels see a {SPOTTER_GRID_HZ:g} Hz "
                        "grid", path=where, field="stabilisation.rate_hz",
                        fix=f"re-pack with stabilisation.rate_hz={SPOTTER_GRID_HZ:g}")
    if packed.get("lighting") != view.lighting:
        raise DataError(f"the shards were lighting-normalised with {packed.get('lighting')!r}, motion.lighting is "
                        f"{view.lighting!r}", path=where, field="lighting",
                        fix="set motion.lighting to the shards' lighting, or re-pack")
