"""The prepare stage (``cf-prepare``): clean raw ratings, index ids, split train/validation, write Parquet.

Run it with spark-submit (``jobs/prepare.py``; the project installed in the
Python that ``PYSPARK_PYTHON`` names, or shipped as docs/operations.md describes)::

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' \\
        jobs/prepare.py --conf conf/local.yaml --set prepare.input=data/demo/ratings.csv

or as the console script ``cf-prepare --conf conf/local.yaml``.

Outputs under ``prepare.output``: ``train/``, ``valid/`` (``user_idx int32,
item_idx int32, rating float32`` and, with ``keep_ids``, ``user_id, item_id,
timestamp``), ``users/``, ``items/`` (id maps with counts and mean ratings),
``quarantine/`` (rejected rows with a ``reason``), ``report.json``, ``meta.json``
and ``_SUCCESS``. Exit code 0 on success, 2 for bad input or config, 3 for a
failed quality gate, each with a one-line cause on stderr.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, List, Optional, Sequence

from pyspark.sql import SparkSession

from cfmodel.cli import job_parser, run_main, start_job
from cfmodel.config import Config
from cfmodel.errors import ConfigError
from cfmodel.ingest.source import read_ratings
from cfmodel.ingest.clean import column_spec
from cfmodel.prepare.transforms import build_meta, prepare_ratings, write_prepared
from cfmodel.session import spark_session
from cfmodel.storage import Storage, atomic_output, input_fingerprint

LOG = logging.getLogger(__name__)


def run(spark: SparkSession, cfg: Config, overwrite: bool) -> Dict[str, Any]:
    """The prepare stage on a running session; returns its report (also written as ``report.json``)."""
    pc = cfg.prepare
    if pc.input is None:
        raise ConfigError("prepare.input is not set: name your ratings or events (--set prepare.input=PATH)")
    started = time.time()
    storage = Storage(spark)
    with atomic_output(storage, pc.output, overwrite) as tmp:
        raw = read_ratings(spark, pc.input, column_spec(pc), pc.input_format)
        prepared = prepare_ratings(raw.frame, pc, raw.feedback)
        try:
            write_prepared(prepared, tmp, pc)
        finally:
            prepared.release()
        counts = prepared.counts
        meta = build_meta(prepared, pc, {
            "path": storage.qualify(pc.input), "format": raw.input_format, "files": len(raw.files),
            "sha256": input_fingerprint(spark, storage, pc.input, raw.files, pc.checksum,
                                        pc.checksum_chunk_mb),
            "checksum": pc.checksum, "extra_columns": raw.extra_columns})
        storage.write_json(f"{tmp}/meta.json", meta)
        report = {"stage": "prepare", "output": storage.qualify(pc.output), **counts,
                  "feedback": prepared.feedback, "rating_scale": prepared.scale,
                  "input_sha256": meta["input"]["sha256"], "seconds": round(time.time() - started, 2)}
        storage.write_json(f"{tmp}/report.json", report)
    LOG.info("prepare report: %s", json.dumps(report, sort_keys=True))
    return report


def _run(argv: List[str]) -> int:
    args = job_parser("Clean, index and split ratings into Parquet.").parse_args(argv)
    cfg = start_job(args)
    with spark_session(cfg.spark) as spark:
        report = run(spark, cfg, args.overwrite)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for ``jobs/prepare.py`` (spark-submit) and the ``cf-prepare`` console script."""
    return run_main(_run, argv)
