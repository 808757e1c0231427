import sys

from data.cli import dispatch

COMMANDS = {
    "evaluate": ("spotting.evaluate_cli", "score predictions against ground truth (MEGC protocol)"),
    "baseline": ("spotting.baseline_cli", "run the flow-only baseline spotter on a dataset"),
}

if __name__ == "__main__":
    sys.exit(dispatch("spotting", COMMANDS))
