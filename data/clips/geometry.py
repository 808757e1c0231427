"""ClipGeometry: the shape of what the model eats, as the loader needs it.

The model config owns these values (pretrain.model_config.ModelConfig.geometry produces this object); the shard
loader takes it instead of repeating them in its own config, so a clip is always cut, sized and masked for the
model that trains on it. Kept in data/ so the loader does not import pretrain/.
"""
from __future__ import annotations

import dataclasses

from data.clips.masking import RegionMaskGenerator


@dataclasses.dataclass(frozen=True)
class ClipGeometry:
    frames: int                       # frames per clip
    size: int                         # clips are size x size
    patch: int                        # token: tubelet frames x patch x patch pixels
    tubelet: int
    region: tuple[int, int, int]      # tokens (t, h, w) per region
    visible_per_region: int
    mask_mode: str

    @property
    def token_grid(self) -> tuple[int, int, int]:
        side = self.size // self.patch
        return self.frames // self.tubelet, side, side

    def mask_generator(self) -> RegionMaskGenerator:
        return RegionMaskGenerator(self.token_grid, self.region, self.visible_per_region, self.mask_mode)
