"""A transformers user's code, run by tests/test_release.py inside tests/clean_env's torch + transformers
environment: a release's processor and model on frames, every output saved.

argv: SITE RELEASE FRAMES.npy FPS|none OUT.npz. Prints one JSON line: which modules could not be imported (all
of them must not be), the classes loaded and the module they came from.
"""
import sys

sys.path.insert(0, sys.argv[1])

import importlib
import json

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

OUTSIDE = ("data", "pretrain", "finetune", "spotting", "launch", "cv2", "PIL", "torchvision", "timm", "pandas",
           "scipy", "decord")


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def main(release: str, frames_path: str, fps: str, out: str) -> None:
    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(release, trust_remote_code=True, local_files_only=True)
    model = AutoModel.from_pretrained(release, trust_remote_code=True, local_files_only=True).eval()
    frames = np.load(frames_path)
    saved = {}
    for g in processor.granularities:
        inputs = processor(frames, fps=None if fps == "none" else float(fps), granularity=g["name"])
        with torch.no_grad():
            output = model(**inputs, output_hidden_states=True)
        saved[f"{g['name']}.pixel_values"] = inputs["pixel_values"].numpy()
        saved[f"{g['name']}.last_hidden_state"] = output.last_hidden_state.numpy()
        saved[f"{g['name']}.hidden_states"] = torch.stack(output.hidden_states).numpy()
    np.savez(out, **saved)
    print(json.dumps({"importable": [m for m in OUTSIDE if importable(m)],
                      "classes": [type(processor).__name__, type(model).__name__],
                      "modules": [type(processor).__module__, type(model).__module__],
                      "output": type(output).__name__}))


if __name__ == "__main__":
    main(*sys.argv[2:6])
