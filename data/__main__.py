import sys

from data.cli import dispatch

COMMANDS = {
    "synth": ("data.synthetic_cli", "generate the synthetic expressive-face benchmark"),
    "faces": ("data.faces_cli", "detect, track and align faces in videos"),
    "flow": ("data.flow_cli", "optical flow, strain and region motion curves"),
    "pack": ("data.pack_cli", "pack face clips into WebDataset shards"),
    "annotations": ("data.adapters_cli", "convert a dataset annotation file to the interval table"),
}

if __name__ == "__main__":
    sys.exit(dispatch("data", COMMANDS))
