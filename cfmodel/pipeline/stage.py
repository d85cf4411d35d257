"""The pipeline (``cf-pipeline``): every stage on one config, as one versioned run.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' \\
        jobs/pipeline.py --conf conf/local.yaml --run-id 2026-11-29

or ``cf-pipeline --conf conf/local.yaml``. Runs ``pipeline.stages`` (generate is
for the demo) into ``<pipeline.output_root>/<run id>/<stage>/``, writes
``manifest.json`` before and after every stage and moves
``<output_root>/latest`` to the run only when everything succeeded. Rerunning
the same ``--run-id`` skips the stages that are already complete and unchanged
and resumes the rest; a train stage that failed or was killed continues from
its last checkpoint (see :mod:`cfmodel.pipeline.runs`). ``--stages
train,score`` runs only those (their inputs must exist in the run).

Exit codes: 0 success; 2 bad config or input; 3 quality gate failed (data
quarantine, or ``evaluate.max_valid_rmse``); 4 training diverged. The cause is
one line on stderr.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence

from pyspark.sql import SparkSession

from cfmodel import evaluate, prepare, score, train, tune
from cfmodel.cli import job_parser, run_main, start_job
from cfmodel.config import Config
from cfmodel.lease import lease
from cfmodel.errors import ConfigError, InputError
from cfmodel.evaluate.stage import check_quality_gate, print_table
from cfmodel.generate import generate
from cfmodel.pipeline.runs import (Run, fingerprints, is_local, local_staging, new_run_id, previous_run, prune,
                                   run_stages, wire)
from cfmodel.score.stage import print_examples
from cfmodel.session import spark_session
from cfmodel.storage import Storage
from cfmodel.tracking import record_run

LOG = logging.getLogger(__name__)


def _input_listing(storage: Storage, wired: Config, stages: List[str]) -> List[Dict[str, Any]]:
    """What prepare's fingerprint sees of the input files (empty for generated input)."""
    if "generate" in wired.pipeline.stages:
        return []  # the generate fingerprint stands for it
    if wired.prepare.input is None:
        if "prepare" in stages:
            raise ConfigError("prepare.input is not set: name your ratings or events (--set prepare.input=PATH)")
        return []
    if storage.exists(wired.prepare.input):
        return storage.listing(wired.prepare.input)
    if "prepare" in stages:
        raise InputError(f"input not found: {wired.prepare.input}")
    return []


def stage_bodies(spark: SparkSession, storage: Storage, wired: Config, run: Run,
                 fps: Dict[str, str]) -> Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]]:
    """What each stage does in this run; each takes the stage's entry from an earlier attempt."""
    def do_train(prior: Dict[str, Any]) -> Dict[str, Any]:
        # An attempt that failed or was killed (left "running") with the same config resumes from its checkpoint.
        resume = prior.get("status") in ("failed", "running") and prior.get("fingerprint") == fps["train"]
        result = train.run(wired.train, overwrite=True, resume=resume, spark=spark)
        if not is_local(run.root):
            storage.copy_from_local(wired.train.output, f"{run.dir}/train")
        return result

    def do_score(prior: Dict[str, Any]) -> Dict[str, Any]:
        report, examples = score.run(spark, wired, overwrite=True)
        print_examples(storage, examples, wired.score.titles)
        return report

    def do_evaluate(prior: Dict[str, Any]) -> Dict[str, Any]:
        metrics = evaluate.run(spark, wired, overwrite=True)
        print_table(metrics)
        return {k: metrics[k] for k in ("valid_rmse", "valid_mae", "users_evaluated", "valid_rows", "methods")}

    return {"generate": lambda prior: {"stage": "generate", **generate(wired.generate)},
            "prepare": lambda prior: prepare.run(spark, wired, overwrite=True),
            "tune": lambda prior: tune.run(spark, wired, overwrite=True),
            "train": do_train, "score": do_score, "evaluate": do_evaluate}


def run_pipeline(spark: SparkSession, cfg: Config, run_id: str, stages: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run (or resume) ``run_id`` on a running session; returns the manifest.

    Raises whatever a stage raises (after recording it in the manifest), or
    :class:`cfmodel.errors.QualityGateError` when the model misses
    ``evaluate.max_valid_rmse``; ``latest`` moves only on success. The run holds the lease on its directory
    throughout (:mod:`cfmodel.lease`): a second live attempt of the same run id stops at once with
    :class:`cfmodel.lease.LeaseHeldError` (exit code 6), before it touches anything.
    """
    storage = Storage(spark)
    root = cfg.pipeline.output_root.rstrip("/")
    with lease(storage, f"{root}/{run_id}"):
        return _run_leased(spark, storage, cfg, root, run_id, stages or list(cfg.pipeline.stages))


def _run_leased(spark: SparkSession, storage: Storage, cfg: Config, root: str, run_id: str,
                stages: List[str]) -> Dict[str, Any]:
    wired = wire(cfg, f"{root}/{run_id}", local_staging(root, cfg.pipeline.local_dir, run_id))
    run = Run(storage, root, run_id, wired)
    fps = fingerprints(wired, _input_listing(storage, wired, stages), run.manifest["versions"]["cfmodel"] or "")
    run.manifest.update(run_dir=storage.qualify(run.dir), fingerprints=fps, stages_requested=stages)
    run.save()

    def gate() -> None:
        entry = run.manifest["stages"].get("evaluate", {})
        if "evaluate" in stages and entry.get("report"):
            run.manifest["metrics"] = entry["report"]
            check_quality_gate(entry["report"], wired.evaluate.max_valid_rmse)

    previous = previous_run(storage, root, run_id)
    try:
        run_stages(run, stages, fps, stage_bodies(spark, storage, wired, run, fps), gate, previous)
    finally:  # a failed run is recorded too, as failed
        tracked = record_run(spark, wired, run_id, run.dir, run.manifest)
        if tracked:
            run.manifest["mlflow_run_id"] = tracked
            run.save()
    pruned = prune(storage, root, cfg.pipeline.keep_runs, protect=[run_id])
    if pruned:
        LOG.info("pruned old runs: %s", ", ".join(pruned))
    return run.manifest


def _run(argv: List[str]) -> int:
    parser = job_parser("Run the whole pipeline as one versioned run.")
    parser.add_argument("--run-id", help="run id (default: a new UTC timestamp); reuse one to resume it")
    parser.add_argument("--stages", help="comma-separated subset of pipeline.stages to run")
    args = parser.parse_args(argv)
    cfg = start_job(args)
    run_id = args.run_id or new_run_id()
    if "/" in run_id or run_id in ("latest", ".", ".."):
        raise InputError(f"--run-id {run_id!r} must be a plain name")
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    with spark_session(cfg.spark) as spark:
        manifest = run_pipeline(spark, cfg, run_id, stages)
    summary = {"run_id": run_id, "run_dir": manifest["run_dir"], "status": manifest["status"],
               "stages": {s: {k: e.get(k) for k in ("status", "seconds", "skipped")}
                          for s, e in manifest["stages"].items()}}
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for ``jobs/pipeline.py`` (spark-submit) and the ``cf-pipeline`` console script."""
    return run_main(_run, argv)
