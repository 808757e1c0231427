import sys

from data.common.cli import dispatch

COMMANDS = {
    "loso": ("spotting.loso", "leave-one-subject-out fine-tuning + fusion evaluation"),
    "spot": ("spotting.spot", "spot expressions in a video with a trained spotter (CSV/JSON + timeline PNG)"),
    "evaluate": ("spotting.evaluate_cli", "score predictions against ground truth (MEGC protocol)"),
    "baseline": ("spotting.baseline_cli", "run the flow-only baseline spotter on a dataset"),
    "seeds": ("spotting.seeds.compare", "run a seed method (softnet/lgnmnet/mean/lgsnet) or compare them all (LOSO)"),
}

if __name__ == "__main__":
    sys.exit(dispatch("spotting", COMMANDS))
