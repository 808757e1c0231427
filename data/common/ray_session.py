"""The Ray a command runs its tasks on: a new local instance by default, or a cluster given by address."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Ray for the block; shut down at its end only if this call started it.

    address None: a new local instance with `num_cpus` (default: every core). `address="local"` gives a new
    instance even when someone's `ray start` cluster runs on this machine, and a short temp dir keeps Ray's
    socket paths under the 107-character Unix limit. Otherwise the cluster at `address`: "auto" inside
    `ray job submit`, or ray://HEAD:10001.
    """
    import ray

    started = not ray.is_initialized()
    temp_dir = None
    if started and address is None:
        temp_dir = tempfile.mkdtemp(prefix="rd", dir="/tmp")
        ray.init(address="local", num_cpus=num_cpus or max(2, os.cpu_count() or 2), include_dashboard=False,
                 configure_logging=False, _temp_dir=temp_dir)
    elif started:
        ray.init(address=address, configure_logging=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
