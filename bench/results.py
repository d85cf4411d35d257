"""Where a bench leaves its latest table: ``bench/results/<bench>.md``, overwritten by the next run, headed by
the date, the command, the machine and the git revision it measured."""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def git_revision() -> str:
    """The checkout's commit (with ``+dirty`` when files differ from it), or ``unknown`` outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def table_name(bench: str, part: str = "", overrides: bool = False) -> str:
    """The table a run writes: ``<bench>`` for the full run at the shipped defaults only; a partial run adds
    ``_<part>`` and a run with ``--set`` overrides ``_with_set`` (both, in that order), so an experiment never
    replaces the table the docs quote, nor a partial run a full one's."""
    return bench + (f"_{part}" if part else "") + ("_with_set" if overrides else "")


def write_results(bench: str, body: str) -> Path:
    """Write ``body`` (markdown) as ``bench/results/<bench>.md`` under a header; returns the path."""
    RESULTS.mkdir(exist_ok=True)
    command = " ".join([Path(sys.executable).name, *[os.path.relpath(a) if os.path.exists(a) else a
                                                      for a in sys.argv]])
    header = (f"# {bench}\n\n| | |\n|---|---|\n| date | {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC |\n"
              f"| command | `{command}` |\n| machine | {platform.machine()}, {os.cpu_count()} cores, "
              f"{platform.system()} |\n| git revision | {git_revision()} |\n\n")
    path = RESULTS / f"{bench}.md"
    path.write_text(header + body.rstrip() + "\n", encoding="utf-8")
    return path


class _Tee:
    """A text stream that writes to ``stream`` and keeps a copy."""

    def __init__(self, stream) -> None:
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


# Set while a bench records: a process it starts from its own script (bench_score's ``--one`` runs) inherits it.
RECORDING = "CFMODEL_BENCH_RECORDING"


@contextlib.contextmanager
def recorded(bench: str):
    """Run a bench's ``main`` inside: what it prints (its tables, in markdown) becomes
    ``bench/results/<bench>.md`` when it finishes without an error; a failed run leaves the last one.
    Inside a recording bench (a child it started) it records nothing: the child's last line stays the one
    its parent reads, and only the parent's table is written."""
    if os.environ.get(RECORDING):
        yield
        return
    os.environ[RECORDING] = bench
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        yield
    finally:
        sys.stdout = tee.stream
        del os.environ[RECORDING]
    print(f"written: {write_results(bench, ''.join(tee.parts))}")
