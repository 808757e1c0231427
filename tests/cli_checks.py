"""Running a command-line stage as a user would, and checking that it failed with one clear error line."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m ARGV...` from the repository root, output captured; `env`: variables set for the run."""
    return subprocess.run([sys.executable, "-m", *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env} if env else None)


def one_error(proc: subprocess.CompletedProcess, *texts) -> str:
    """The one `error:` line of a run that exited 2 without a traceback; it must hold every one of `texts`."""
    errors = [ln for ln in re.split(r"[\r\n]+", proc.stderr) if ln.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1, proc.stderr[-2000:]
    for text in texts:
        assert text in errors[0], errors[0]
    return errors[0]
