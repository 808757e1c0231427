"""A Python environment holding only torch, transformers and what they require, made in seconds (no install).

A fresh venv would have to install torch (minutes, gigabytes). Instead the distributions a clean
`pip install torch transformers` would bring are read from the installed metadata (the requirement closure of the
two, markers evaluated for this machine, extras followed), and one folder gets a symlink to each of their
top-level entries in this venv's site-packages (packages, modules, shared libraries, .dist-info for
importlib.metadata). A namespace folder shared with distributions outside the closure is made real and filled
with only the closure's entries. `python -I -S` then starts without site-packages, .pth files, PYTHONPATH,
the user site or the current folder on sys.path; the script puts the folder first. What is not in the closure
(SpotMAE itself, OpenCV, PIL, torchvision, timm, pandas, ...) cannot be imported there, and the script checks it.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOTS = ("torch", "transformers")


def closure(roots=ROOTS) -> set[str]:
    """Canonical names of `roots` and every distribution they require on this machine, extras followed."""
    names, done = set(), set()
    todo = [(canonicalize_name(r), "") for r in roots]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        names.add(name)
        for text in md.distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": extra}):
                continue  # another platform, or another extra
            if extra and (req.marker is None or "extra" not in str(req.marker)):
                continue  # a requirement of the base distribution: its own pass takes it
            todo += [(canonicalize_name(req.name), e) for e in ("", *req.extras)]
    return names


def owners() -> dict[tuple[str, ...], set[str]]:
    """{path parts of a site-packages entry (top level, and one level down): the distributions holding it}."""
    out: dict[tuple[str, ...], set[str]] = {}
    for dist in md.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or []:
            parts = file.parts
            if parts[0] == ".." or parts[0] == "__pycache__" or parts[0].endswith(".pth"):
                continue
            out.setdefault(parts[:1], set()).add(name)
            if len(parts) > 2:
                out.setdefault(parts[:2], set()).add(name)
    return out


def make_site(folder: Path, roots=ROOTS) -> Path:
    """FOLDER holding links to exactly the closure of `roots` (see the module doc)."""
    keep = closure(roots)
    site = Path(md.distribution(roots[0]).locate_file(""))
    held = owners()
    folder.mkdir(parents=True, exist_ok=True)
    for parts, who in held.items():
        if len(parts) != 1 or not who & keep:
            continue
        if who <= keep:
            os.symlink(site / parts[0], folder / parts[0])
            continue
        (folder / parts[0]).mkdir()  # shared with distributions outside the closure: only the closure's entries
        for sub, sub_who in held.items():
            if len(sub) == 2 and sub[0] == parts[0] and sub_who <= keep:
                os.symlink(site.joinpath(*sub), folder.joinpath(*sub))
    return folder


def run(script: Path, site: Path, *args, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -I -S script args` with only `site` added to sys.path (the script's first argument)."""
    return subprocess.run([sys.executable, "-I", "-S", str(script), str(site), *map(str, args)], check=False,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          cwd=site.parent)
