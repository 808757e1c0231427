import sys

from data.common.cli import dispatch

COMMANDS = {
    "synth": ("data.synthetic.cli", "generate the synthetic expressive-face benchmark"),
    "identities": ("data.synthetic.identities_cli", "install, list and show the real faces the generator uses"),
    "faces": ("data.faces.cli", "detect, track and align faces in videos"),
    "flow": ("data.flow.cli", "optical flow, strain and region motion curves"),
    "pack": ("data.shards.cli", "pack face clips into WebDataset shards"),
    "annotations": ("data.annotations.cli", "convert a dataset annotation file to the interval table"),
    "prepare": ("data.prepare.cli", "a published dataset or folder + CSV -> aligned faces, videos.csv, intervals.csv"),
}

if __name__ == "__main__":
    sys.exit(dispatch("data", COMMANDS))
