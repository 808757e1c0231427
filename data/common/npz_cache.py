"""The .npz caches (stabilised streams, flow curves, encoder features, published-method inputs): one reader and
one atomic writer, so every cache is read the same safe way.

A cache is work saved, never the only copy: a file that is absent, cut short (a killed job, a full disk) or
damaged is recomputed, not an error. Reading never unpickles (allow_pickle=False), and each array is read once:
an np.load file re-reads (and for a compressed file, re-inflates) an array on every access.
"""
from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data.common.atomic import atomic_path

log = logging.getLogger(__name__)

# what np.load and reading an archive member raise on a file that is cut short or damaged
UNREADABLE = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def read_npz(path, needs: tuple[str, ...] = (), check: Callable[[dict[str, np.ndarray]], str | None] | None = None
             ) -> dict[str, np.ndarray] | None:
    """Every array of the .npz at `path`, or None when the cache does not serve: without a word when there is
    no file; with a logged warning when it cannot be read or lacks one of the arrays it `needs`; with an info
    line when `check` (given the arrays, it returns why they do not serve, or None) refuses them: a cache of
    other settings is what a change of config leaves, not a fault. An error inside `check` (an array of the
    wrong kind) counts as an unreadable cache.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        missing = [k for k in needs if k not in arrays]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
        why = check(arrays) if check is not None else None
    except (*UNREADABLE, KeyError, TypeError, IndexError) as e:  # IndexError, TypeError: an array of another kind
        log.warning("recomputing %s: unreadable cache (%s: %s)", path, type(e).__name__, e)
        return None
    if why is not None:
        log.info("recomputing %s: %s", path, why)
        return None
    return arrays


def write_npz(path, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    """Write `arrays` to the .npz at `path` atomically (a crash leaves the old file or none, never half)."""
    save = np.savez_compressed if compressed else np.savez
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        save(f, **arrays)
