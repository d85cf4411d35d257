"""Score job: top-N recommendations for every user, by broadcasting the item factors.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' \\
        jobs/score.py --conf conf/local.yaml

or the console script ``cf-score --conf conf/local.yaml``. Reads the train job's
``user_factors/``, ``item_factors/``, ``meta.json`` (and ``model.pt`` for
``embedding_net``) and the prepare job's output; writes under ``score.output``:
``recommendations/`` (``user_id, rank, item_id, score, fallback,
model_version``), ``nested/`` (ALS's ``userId, recommendations:
array<struct<movieId, rating>>``), ``csv/`` and ``jsonl/`` when configured,
``report.json`` and ``_SUCCESS``. Exit code 0 on success, 2 for bad input or
config (the item table over ``score.broadcast_max_mb`` among them).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd
from pyspark.sql import SparkSession

from pyspark.sql import functions as F

from cfmodel.cli import job_parser, run_main, start_job
from cfmodel.config import Config
from cfmodel.recommend import (build_scorer, load_inputs, output_frames, read_user_list, recommend, seen_items,
                               users_to_score)
from cfmodel.session import spark_session
from cfmodel.storage import Storage, atomic_output, content_sha256

LOG = logging.getLogger("cfmodel.jobs.score")


def run(spark: SparkSession, cfg: Config, overwrite: bool) -> Tuple[Dict[str, Any], Optional[pd.DataFrame]]:
    """The score stage on a running session; returns (report, the first users' lists for display)."""
    sc, user_col, item_col = cfg.score, cfg.prepare.user_col, cfg.prepare.item_col
    started = time.time()
    storage = Storage(spark)
    # Arrow batches many blocks long: per-batch overhead stays small, blocks stay cache-sized.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(max(sc.block_size, 8192)))
    with atomic_output(storage, sc.output, overwrite) as tmp:
        inputs = load_inputs(spark, storage, sc)
        scorer = build_scorer(inputs, sc)
        version = sc.model_version or content_sha256(spark, [f"{sc.model}/model.pt"])[:12]

        subset = read_user_list(spark, sc.users, user_col) if sc.users else None
        frame = users_to_score(inputs.user_factors, inputs.users, seen_items(sc.data, spark, sc.exclude_valid),
                               subset)
        long = recommend(frame, scorer, spark, sc.partitions).withColumn("model_version", F.lit(version)).persist()
        for name, (fmt, out) in output_frames(long, sc.formats, sc.output_files, user_col, item_col).items():
            out.write.format(fmt).option("header", True).save(f"{tmp}/{name}")
        stats = long.agg(F.countDistinct("user_id").alias("users"), F.count(F.lit(1)).alias("rows"),
                         F.countDistinct(F.when(F.col("fallback"), F.col("user_id"))).alias("fallback")).first()
        report = {"stage": "score", "output": storage.qualify(sc.output), "model_version": version,
                  "model": inputs.model_args["name"], "users_scored": stats["users"],
                  "fallback_users": stats["fallback"], "rows_written": stats["rows"], "top_n": sc.top_n,
                  "items": len(scorer.items.ids), "candidate_items": int(scorer.items.candidate.sum()),
                  "seconds": round(time.time() - started, 2)}
        storage.write_json(f"{tmp}/report.json", report)
        examples = long.where(F.col("user_id").isin(
            [r.user_id for r in long.select("user_id").distinct().orderBy("user_id").limit(sc.show_examples)
             .collect()])).orderBy("user_id", "rank").toPandas() if sc.show_examples else None
        long.unpersist()
    LOG.info("score report: %s", json.dumps(report, sort_keys=True))
    return report, examples


def _run(argv: List[str]) -> int:
    args = job_parser("Top-N recommendations for every user.").parse_args(argv)
    cfg = start_job(args)
    with spark_session(cfg.spark) as spark:
        report, examples = run(spark, cfg, args.overwrite)
        print(json.dumps(report, indent=2, sort_keys=True))
        if examples is not None and len(examples):
            print_examples(spark, examples, cfg.score.titles, cfg.prepare.item_col)
    return 0


def print_examples(spark, examples, titles: Optional[str], item_col: str) -> None:
    if titles:
        names = spark.read.option("header", True).csv(titles).select(
            F.col(item_col).cast("int").alias("item_id"), "title").toPandas()
        examples = examples.merge(names, on="item_id", how="left")
    for user_id, recs in examples.groupby("user_id", sort=True):
        print(f"\nuser {user_id}{' (fallback)' if recs['fallback'].iloc[0] else ''}:")
        for row in recs.itertuples():
            title = f"  {row.title}" if "title" in recs.columns else ""
            print(f"  {row.rank:>2}. {row.item_id:<8} {row.score:.2f}{title}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for spark-submit and the ``cf-score`` console script."""
    return run_main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
