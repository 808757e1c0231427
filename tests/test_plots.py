"""spotting.evaluation.plots timelines: labelled (ground truth vs predictions) and unlabelled (`spotting spot` on new
videos)."""
import numpy as np
import pandas as pd

from data.common.tables import empty_intervals
from spotting.evaluation.plots import FP_EDGE, plot_timeline

VIDEOS = pd.DataFrame([{"subject": "", "video": "new", "path": "new.mp4", "fps": 30.0, "num_frames": 300}])
PRED = pd.DataFrame([{"subject": "", "video": "new", "onset": 30, "apex": 50, "offset": 90, "type": "macro",
                      "emotion": "", "score": 0.9},
                     {"subject": "", "video": "new", "onset": 200, "apex": 205, "offset": 212, "type": "micro",
                      "emotion": "", "score": 0.7}])


def red_fp_pixels(path) -> int:
    """Pixels within a few levels of the false-positive hatch colour."""
    import matplotlib.image as mpimg

    rgb = (mpimg.imread(path)[..., :3] * 255).astype(int)
    red = np.array([int(FP_EDGE[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - red).max(axis=-1) < 12).sum())


def test_unlabelled_timeline_draws_intervals_by_type_not_as_false_positives(tmp_path):
    labelled = plot_timeline(empty_intervals(), PRED, VIDEOS, tmp_path / "labelled.png")
    unlabelled = plot_timeline(None, PRED, VIDEOS, tmp_path / "unlabelled.png", labelled=False)
    assert unlabelled.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # against empty ground truth both predictions are false positives (red hatch); without labels none is
    assert red_fp_pixels(labelled) > 100
    assert red_fp_pixels(unlabelled) == 0
