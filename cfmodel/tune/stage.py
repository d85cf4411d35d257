"""The tune stage (``cf-tune``): search ``tune.space`` with trials running as Spark tasks.

    cf-tune --conf conf/local.yaml
    cf-train --conf conf/local.yaml --set train.tuned=data/tune     # train with the chosen settings

Each rung of successive halving (:mod:`cfmodel.tune.search`) is one Spark job
with one task per live trial, so trials run side by side on every executor
core; each trains on the prepared Parquet in the task's process
(:mod:`cfmodel.tune.trial`) from the ``train`` section with the trial's
settings. Outputs under ``tune.output``: ``results.csv`` and ``results.json``
(one row per trial and rung, with start and end times and the process that ran
it), ``best.json`` (what ``train.tuned`` reads), ``tune.png`` and ``_SUCCESS``.
The pipeline runs it before train when ``pipeline.stages`` lists ``tune``.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import math
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd
from pyspark.sql import SparkSession

from cfmodel.cli import job_parser, run_main, start_job
from cfmodel.config import Config, TrainConfig, TuneConfig
from cfmodel.errors import ConfigError, InputError
from cfmodel.session import spark_session
from cfmodel.storage import Storage, atomic_output
from cfmodel.config.tuned import BEST
from cfmodel.tune.search import rung_epochs, survivors, trials
from cfmodel.config.train import for_data
from cfmodel.dataset import PreparedData
from cfmodel.tune.trial import run_trial, trial_config

LOG = logging.getLogger(__name__)


def resolve_metric(tune: TuneConfig, train: TrainConfig) -> str:
    """``tune.metric`` made concrete for the train section's objective."""
    if tune.metric == "auto":
        return "valid_rmse" if train.spec.predicts_ratings else "ndcg"
    if tune.metric == "valid_rmse" and not train.spec.predicts_ratings:
        raise ConfigError(f"tune.metric=valid_rmse, but train.objective={train.objective} predicts no ratings; "
                          f"use ndcg")
    return tune.metric


def search(spark: SparkSession, tune: TuneConfig, base: TrainConfig) -> List[Dict[str, Any]]:
    """Every rung's trial results (successive halving over the space's trials)."""
    data = PreparedData(base.data)
    base = for_data(base, data.meta)
    metric = resolve_metric(tune, base)
    points = trials(tune.space, tune.trials, tune.seed)
    full = [trial_config(base, p, p.get("epochs", base.epochs), "unused").run_epochs for p in points]  # checks each
    alive, rows, rung = list(range(len(points))), [], 0
    # Events have no rating to threshold: every held-out pair is relevant.
    threshold = None if data.feedback == "implicit" else tune.relevance_threshold
    run = functools.partial(run_trial, base, metric, tune.k, threshold)
    while True:
        epochs = {t: full[t] if len(alive) == 1 else rung_epochs(full[t], tune.min_epochs, tune.eta, rung)
                  for t in alive}
        tasks = [(t, rung, points[t], epochs[t]) for t in alive]
        LOG.info("tune rung %d: %d trials, %s epochs", rung, len(tasks), sorted(set(epochs.values())))
        spark.sparkContext.setJobDescription(f"cf-tune rung {rung}: {len(tasks)} trials")
        results = spark.sparkContext.parallelize(tasks, len(tasks)).map(run).collect()
        rows += results
        if all(epochs[t] == full[t] for t in alive):
            return rows
        alive = survivors({r["trial"]: r["value"] for r in results}, tune.eta, metric == "valid_rmse")
        rung += 1


def best_of(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The final rung's best trial."""
    last = max(r["rung"] for r in rows)
    final = [r for r in rows if r["rung"] == last and not math.isnan(r["value"])]
    if not final:
        raise InputError("tune: every trial of the last rung diverged; lower the learning rates in tune.space")
    lower = final[0]["metric"] == "valid_rmse"
    return min(final, key=lambda r: (r["value"] if lower else -r["value"], r["trial"]))


def run(spark: SparkSession, cfg: Config, overwrite: bool) -> Dict[str, Any]:
    """The tune stage: search, then write results, ``best.json`` and the plot; returns the summary."""
    storage = Storage(spark)
    with atomic_output(storage, cfg.tune.output, overwrite) as tmp:
        rows = search(spark, cfg.tune, dataclasses.replace(cfg.train, data=cfg.tune.data))
        best = best_of(rows)
        chosen = {"params": best["params"], "metric": best["metric"], "value": best["value"], "trial": best["trial"],
                  "epochs": best["epochs"]}
        frame = pd.DataFrame([{**{k: v for k, v in r.items() if k != "params"}, **r["params"]} for r in rows])
        storage.write_text(f"{tmp}/results.csv", frame.to_csv(index=False))
        storage.write_json(f"{tmp}/results.json", rows)
        storage.write_json(f"{tmp}/{BEST}", chosen)
        storage.write_bytes(f"{tmp}/tune.png", plot(frame))
    summary = {"stage": "tune", "trials": len({r["trial"] for r in rows}), "runs": len(rows),
               "rungs": max(r["rung"] for r in rows) + 1, "best": chosen,
               "concurrent_trials": max_concurrent(rows), "trial_seconds": round(sum(r["seconds"] for r in rows), 1)}
    LOG.info("tune result: %s", json.dumps(summary, sort_keys=True, default=str))
    return summary


def max_concurrent(rows: List[Dict[str, Any]]) -> int:
    """The most trials that were running at one moment (from their start and end times)."""
    edges = sorted([(r["started"], 1) for r in rows] + [(r["ended"], -1) for r in rows], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def plot(frame: pd.DataFrame) -> bytes:
    """``tune.png``: each trial's metric by epochs trained, and when each trial ran (one bar per task)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for trial, runs in frame.groupby("trial"):
        left.plot(runs["epochs"], runs["value"], marker="o", label=f"trial {trial}")
    left.set(xlabel="epochs trained", ylabel=frame["metric"].iloc[0], title="successive halving")
    left.legend(fontsize=7)
    start = frame["started"].min()
    for n, row in enumerate(frame.itertuples()):
        right.barh(n, row.ended - row.started, left=row.started - start)
    right.set(xlabel="seconds since the search started", ylabel="trial run", title="trials as Spark tasks")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _run(argv: List[str]) -> int:
    args = job_parser("Search training settings with trials as Spark tasks (successive halving).").parse_args(argv)
    cfg = start_job(args)
    with spark_session(cfg.spark) as spark:
        print(json.dumps(run(spark, cfg, args.overwrite), indent=2, sort_keys=True, default=str))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for ``jobs/tune.py`` and the ``cf-tune`` console script."""
    return run_main(_run, argv)
