import sys

from data.common.cli import dispatch

COMMANDS = {
    "loso": ("spotting.cli.loso", "leave-one-subject-out: a reader on channel sets, next to the flow baseline"),
    "spot": ("spotting.cli.spot", "spot expressions in a video with a trained spotter (CSV/JSON + timeline PNG)"),
    "live": ("spotting.cli.live", "spot expressions while a camera, stream or file plays (a causal spotter)"),
    "evaluate": ("spotting.cli.evaluate", "score predictions against ground truth (MEGC protocol)"),
    "baseline": ("spotting.cli.baseline", "run the flow-only baseline spotter on a dataset"),
    "published": ("spotting.cli.published",
                  "run a published method (softnet/lgnmnet/mean/lgsnet) or compare them all (LOSO)"),
}

if __name__ == "__main__":
    sys.exit(dispatch("spotting", COMMANDS))
