"""Caches of numpy arrays in .npz files: read whole or not at all, written atomically.

Every array a caller needs is read once into memory (indexing an open npz re-reads the array on each access), a
file that is absent, cut off or unreadable is None with a logged reason (the caller recomputes it), and a
`valid` check can refuse a file made with other settings. Never unpickles.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from data.common.atomic import atomic_path

log = logging.getLogger(__name__)


def read_npz(path, valid=None) -> dict[str, np.ndarray] | None:
    """Every array of the .npz at `path`, or None when absent, unreadable, or refused by `valid(arrays)`."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        log.warning("recomputing %s: unreadable cache (%s)", path, e)
        return None
    try:
        ok = valid is None or valid(arrays)
    except (KeyError, ValueError, IndexError) as e:
        log.warning("recomputing %s: %s", path, e)
        return None
    return arrays if ok else None


def write_npz(path, arrays: dict, compressed: bool = False) -> Path:
    """All `arrays` into one .npz, written whole or not at all."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return Path(path)
