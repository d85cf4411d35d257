"""The evaluate stage (``cf-evaluate``, also ``cf-report``): metrics, baselines and the interpretation report.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' \\
        jobs/evaluate.py --conf conf/local.yaml

or the console script ``cf-evaluate --conf conf/local.yaml``. Reads the train
job's output (``evaluate.model``) and the prepare output it was trained on
(``evaluate.data``); writes under ``evaluate.output``: ``report.html`` (open it
in a browser), ``plots/*.png``, ``tables/*.csv`` and ``metrics.json``. Exit
code 0 on success, 2 for bad input or config, 3 when the model's validation
RMSE is worse than ``evaluate.max_valid_rmse`` (the report is still written,
so the failure can be read).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

from pyspark.sql import SparkSession

from cfmodel.evaluate.analysis import build_report
from cfmodel.cli import job_parser, run_main, start_job
from cfmodel.config import Config
from cfmodel.errors import QualityGateError
from cfmodel.session import spark_session
from cfmodel.storage import Storage, atomic_output

LOG = logging.getLogger(__name__)


def check_quality_gate(metrics: dict, max_valid_rmse: Optional[float]) -> None:
    """Raise :class:`QualityGateError` when the validation RMSE is over the configured bound."""
    if max_valid_rmse is not None and metrics["valid_rmse"] is None:
        raise QualityGateError(f"evaluate.max_valid_rmse={max_valid_rmse} needs a model that predicts ratings "
                               "(train.objective rating or hybrid); this one ranks only")
    if max_valid_rmse is not None and metrics["valid_rmse"] > max_valid_rmse:
        raise QualityGateError(f"validation RMSE {metrics['valid_rmse']:.4f} is worse than "
                               f"evaluate.max_valid_rmse={max_valid_rmse}")


def run(spark: SparkSession, cfg: Config, overwrite: bool) -> Dict[str, Any]:
    """The evaluate stage on a running session; returns ``metrics.json``'s content (gate not applied)."""
    storage = Storage(spark)
    with atomic_output(storage, cfg.evaluate.output, overwrite) as tmp:
        metrics = build_report(spark, storage, cfg, tmp)
    LOG.info("evaluate: validation RMSE %s, MAE %s over %d rows; report %s/report.html", metrics["valid_rmse"],
             metrics["valid_mae"], metrics["valid_rows"], cfg.evaluate.output.rstrip("/"))
    return metrics


def _run(argv: List[str]) -> int:
    args = job_parser("Evaluate a trained model against baselines and write the report.").parse_args(argv)
    cfg = start_job(args)
    with spark_session(cfg.spark) as spark:
        metrics = run(spark, cfg, args.overwrite)
    print_table(metrics)
    print(f"report: {cfg.evaluate.output.rstrip('/')}/report.html")
    check_quality_gate(metrics, cfg.evaluate.max_valid_rmse)
    return 0


def print_table(metrics: dict) -> None:
    """The metrics table, one method a line, as the pipeline and the job print it."""
    k = metrics["k"]
    head = f"{'method':<32} {'RMSE':>7} {'MAE':>7} {'P@' + str(k):>7} {'R@' + str(k):>7} {'NDCG':>7} {'MAP':>7} " \
           f"{'cover':>7}"
    print(head)
    for row in metrics["methods"]:
        cells = [f"{row[c]:7.4f}" if row[c] is not None else f"{'—':>7}"
                 for c in ("rmse", "mae", "precision", "recall", "ndcg", "map", "coverage")]
        print(f"{row['method']:<32} {' '.join(cells)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for ``jobs/evaluate.py`` (spark-submit) and the ``cf-evaluate``/``cf-report`` console scripts."""
    return run_main(_run, argv)
