"""The `heads` channel set: the spotting heads' per-frame probabilities (finetune.heads) at each granularity."""
from __future__ import annotations

import numpy as np

from finetune.windows import CHANNEL_PARTS
from spotting.channels.vocabulary import HEADS, Channel


def head_channels(curves: dict[str, np.ndarray]) -> dict[Channel, np.ndarray]:
    """The heads' curves {granularity: [T, 4] in finetune.windows.CHANNELS order} as channels."""
    return {Channel(HEADS, kind, gran, signal): curve[:, i]
            for gran, curve in curves.items() for i, (kind, signal) in enumerate(CHANNEL_PARTS)}
