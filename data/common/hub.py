"""Model folders named by a Hugging Face Hub id, found in the local Hub cache.

`python -m spotting spot --model`, `Spotter.from_pretrained` and the encoder loaders take a folder or a Hub repo
id (`org/name`, or `org/name@revision` for a branch, tag or commit). A folder that exists wins, as in
transformers. An id is looked up in the cache huggingface_hub keeps (HF_HUB_CACHE, by default
~/.cache/huggingface/hub): `models--org--name/refs/<revision>` names a commit, `snapshots/<commit>/` holds its
files. Nothing is downloaded here: a model not in the cache is an error that says how to fetch it once
(`hf download org/name`), so a run never depends on the network and always reads files that can be checked
(a spotter folder's manifest records every file's sha256).
"""
from __future__ import annotations

import re
from pathlib import Path

from data.common.errors import DataError

# huggingface_hub's repo id rule: namespace/name of letters, digits, "-", "_", "." (one slash)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")


def is_repo_id(name: str) -> bool:
    """True for `org/name` or `org/name@revision` (the form, not whether it exists)."""
    return bool(REPO_ID.match(str(name).partition("@")[0]))


def hub_cache_dir() -> Path:
    """The Hub cache huggingface_hub reads (HF_HUB_CACHE, HF_HOME/hub, or ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str, revision: str | None = None, field: str | None = "--model") -> Path:
    """The snapshot folder of `repo_id` at `revision` (default main) in the local Hub cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError) as e:
        where = f"{repo_id}@{revision}" if revision else repo_id
        raise DataError(f"not found: no such folder, and the Hub model {where} is not in the local Hub cache "
                        f"{hub_cache_dir()} ({type(e).__name__})", path=where, field=field,
                        fix=f"download it once with network access (`hf download {repo_id}`), or point HF_HUB_CACHE "
                            "at the cache that holds it") from None


def resolve_model(name, field: str | None = "--model") -> Path:
    """A model folder: `name` itself when it exists on disk or is no Hub id (the caller's loader then says what is
    missing), else the cached snapshot of the Hub id `name`."""
    path = Path(name)
    if path.exists() or not is_repo_id(str(name)):
        return path
    repo_id, _, revision = str(name).partition("@")
    return cached_snapshot(repo_id, revision or None, field)
