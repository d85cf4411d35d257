"""Command-line plumbing shared by the jobs: arguments, logging, exit codes."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable, List, Optional, Sequence

from py4j.protocol import Py4JNetworkError

from cfmodel.config import USER_KEYS, Config, load_config
from cfmodel.errors import CfError, out_of_space, space_error

LOG = logging.getLogger("cfmodel")
# The JVM went away mid-job (see run_main).
JVM_LOST_EXIT_CODE = 5


def job_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every job takes."""
    sections: dict = {}
    for key in USER_KEYS:
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(name)
    epilog = "the keys you set (--set SECTION.KEY=VALUE):\n" + "\n".join(
        f"  {section}: {', '.join(names)}" for section, names in sections.items())
    epilog += "\nevery key, its default and meaning, the advanced ones too: docs/configuration.md"
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", action="append", default=None,
                        help="YAML config file (default: built-in defaults); repeat to layer files, later keys win")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. --set prepare.valid_fraction=0.1 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines")
    return parser


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record), "level": record.levelname,
                           "logger": record.name, "message": record.getMessage()})


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is logged, so a job run in-process
    (tests, notebooks) never logs into a stream that was swapped out and closed since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(json_lines: bool = False) -> None:
    """Log ``cfmodel.*`` to stderr, as text or as JSON lines."""
    handler = _CurrentStderr()
    handler.setFormatter(_JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("cfmodel")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def start_job(args: argparse.Namespace) -> Config:
    """Set up logging as the arguments ask, then load the config they name and log it, resolved."""
    setup_logging(args.log_json)
    cfg = load_config(args.conf, args.overrides)
    LOG.info("resolved config: %s", cfg.to_json())
    return cfg


def run_main(body: Callable[[List[str]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a job body, turning user-facing errors into one stderr line and an exit code.

    Unexpected exceptions keep their traceback: they are bugs, not input problems.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(args)
    except CfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (Py4JNetworkError, ConnectionError) as exc:
        # Py4J lost the JVM: it exited (on an OutOfMemoryError it does so by design, see cfmodel.session).
        print(f"error: the Spark driver JVM exited during the job ({type(exc).__name__}); if its log above "
              f"says OutOfMemoryError, raise spark.driver.memory", file=sys.stderr)
        return JVM_LOST_EXIT_CODE
    except Exception as exc:
        if not out_of_space(exc):
            raise
        error = space_error(getattr(exc, "filename", None) or "the job's output or checkpoints")
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
