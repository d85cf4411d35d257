"""What a run records about its environment: library versions and the code's git revision."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Dict, Optional

import cfmodel

LIBRARIES = ("pyspark", "torch", "pyarrow", "numpy", "pandas", "petastorm")


def environment() -> Dict[str, Optional[str]]:
    """Python, the version of the cfmodel code that runs, and the pinned libraries' installed versions (None
    when one is missing)."""
    # Not the installed distribution's: a --py-files archive has none, or the node's may be another version,
    # and every stage's fingerprint includes this one.
    versions: Dict[str, Optional[str]] = {"python": platform.python_version(), "cfmodel": cfmodel.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> Optional[str]:
    """The commit of the source tree cfmodel runs from, or None (an installed wheel has no repository)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")
