import sys

from data.common.cli import dispatch

COMMANDS = {
    "demo": ("launch.demo", "synthesize, pack, pretrain, LOSO fine-tune + spot, evaluate: table + timeline PNG"),
    "release": ("launch.release", "export an encoder/spotter as a transformers folder (+ model card), optionally push"),
}

if __name__ == "__main__":
    sys.exit(dispatch("launch", COMMANDS))
