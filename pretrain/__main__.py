"""`python -m pretrain COMMAND ...`: VideoMAE pretraining of LGI-Former (`train`, the default) and its tools."""
import sys

from data.common.cli import dispatch

COMMANDS = {
    "train": ("pretrain.cli", "run or resume pretraining (Ray Train + DeepSpeed); the default command"),
    "flops": ("pretrain.flops", "parameters and FLOPs of a model config"),
}

if __name__ == "__main__":
    sys.exit(dispatch("pretrain", COMMANDS, default="train"))
