import sys

from data.common.cli import dispatch

COMMANDS = {
    "loso": ("spotting.loso_cli", "leave-one-subject-out fine-tuning + fusion evaluation"),
    "spot": ("spotting.spot_cli", "spot expressions in a video with a trained spotter (CSV/JSON + timeline PNG)"),
    "evaluate": ("spotting.evaluate_cli", "score predictions against ground truth (MEGC protocol)"),
    "baseline": ("spotting.baseline_cli", "run the flow-only baseline spotter on a dataset"),
    "published": ("spotting.published_cli",
                  "run a published method (softnet/lgnmnet/mean/lgsnet) or compare them all (LOSO)"),
}

if __name__ == "__main__":
    sys.exit(dispatch("spotting", COMMANDS))
