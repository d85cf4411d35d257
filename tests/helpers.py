"""Helpers the test modules share (no test module imports another)."""
from __future__ import annotations

import logging
import re
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from cfmodel.config import TrainConfig, load_config
from cfmodel.dataset import PreparedData
from cfmodel.train.fit import model_args
from cfmodel.train.loaders import make_loaders

ROOT = Path(__file__).resolve().parents[1]

# A small rating model that trains in seconds on the session's planted data (conftest's prepared_dir).
CFG = TrainConfig(objective="rating", n_factors=8, batch_size=256, lr=0.01, wd=0.05, schedule="one_cycle", epochs=6,
                  progress=False, y_range=[0.0, 5.5])


def setup(prepared_dir, cfg=CFG, loader="memory"):
    """(model, train loader, valid loader, PreparedData) for ``cfg`` on ``prepared_dir``, seeded."""
    data = PreparedData(prepared_dir)
    train, valid, _ = make_loaders(data, cfg.batch_size, loader, 10**9, cfg.seed, 5000)
    torch.manual_seed(cfg.seed)
    model = model_args(cfg, data.n_users, data.n_items).build()
    return model, train, valid, data


class Crash(Exception):
    """What :class:`CrashingLoader` raises: a killed job."""


class CrashingLoader:
    """Delegates to a loader, but dies in one epoch after ``after_steps`` of its batches (a killed job)."""

    def __init__(self, inner, crash_epoch, after_steps=0):
        self.inner, self.crash_epoch, self.after_steps = inner, crash_epoch, after_steps

    def steps_per_epoch(self):
        return self.inner.steps_per_epoch()

    def epoch(self, n):
        if n != self.crash_epoch:
            return self.inner.epoch(n)
        return self._crash(self.inner.epoch(n))

    def _crash(self, batches):
        for step, batch in enumerate(batches):
            if step == self.after_steps:
                raise Crash()
            yield batch


def pipeline_sets(tmp, gen=None):
    """The overrides every small pipeline run in the tests starts from."""
    gen = gen or f"{tmp}/gen"
    return [f"generate.output={gen}", "generate.n_users=300", "generate.n_items=200",
            "generate.n_ratings=15000", "prepare.rows_per_file=5000", "prepare.row_group_mb=1",
            "train.epochs=4", "train.batch_size=128", "train.n_factors=8", "train.progress=false",
            "score.show_examples=0",
            "score.titles=null", "score.output_files=1", "evaluate.baselines=[global_mean]",
            "evaluate.top_movies=50", "evaluate.table_size=5", f"evaluate.titles={gen}/movies.csv",
            "evaluate.plots=false",  # drawn and checked in test_evaluate and test_tune
            f"pipeline.output_root={tmp}/runs", "pipeline.stages=[generate, prepare, train, score, evaluate]"]


def pipeline_config(tmp, *extra, gen=None):
    """The shipped local config with :func:`pipeline_sets` and ``extra`` overrides."""
    return load_config(str(ROOT / "conf" / "local.yaml"), pipeline_sets(tmp, gen) + list(extra))


class OwnRoot:
    """A copy of a pipeline run's output root (conftest's ``pipeline_run``: ``r1``, latest) in ``tmp``, for one
    test to change as it likes; ``config`` keeps the generated data where that run made it, so fingerprints
    match and a new run copies the stages its settings leave unchanged."""

    def __init__(self, base, tmp):
        shutil.copytree(base / "runs", tmp / "runs")
        self.tmp, self.gen = tmp, base / "gen"

    def config(self, *extra):
        return pipeline_config(self.tmp, *extra, gen=self.gen)


def sorted_frame(path, sort):
    """A Parquet table read with pandas, in the order of the ``sort`` columns (to compare runs row for row)."""
    return pd.read_parquet(path).sort_values(sort, ignore_index=True)


@contextmanager
def logged(name: str):
    """The messages ``name``'s logger (and those under it) logs at INFO and above inside the block, as a list
    filled as they come; the logger's level is put back after."""
    lines = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def project_archive(folder: Path, version: Optional[str] = None) -> Path:
    """The checkout's ``cfmodel`` package as a zip, as ``spark-submit --py-files`` ships it (``make dist``'s zip
    holds the same modules), its ``__version__`` set to ``version`` when given; a process with the zip first
    on its ``PYTHONPATH`` imports ``cfmodel`` from it."""
    archive = folder / "cfmodel-py-files.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((ROOT / "cfmodel").rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            if version is not None and name == "cfmodel/__init__.py":
                text = re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', text)
            z.writestr(name, text)
    return archive
