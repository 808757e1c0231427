"""`python -m finetune COMMAND ...`: spotters on the pretrained encoder (`train`, the default)."""
import sys

from data.common.cli import dispatch

COMMANDS = {
    "train": ("finetune.cli", "train spotting heads (frozen / partial / full encoder) on a dataset folder; the default"),
}

if __name__ == "__main__":
    sys.exit(dispatch("finetune", COMMANDS, default="train"))
