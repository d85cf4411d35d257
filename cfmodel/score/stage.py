"""The score stage (``cf-score``): top-N recommendations for every user, by broadcasting the item factors.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' \\
        jobs/score.py --conf conf/local.yaml

or the console script ``cf-score --conf conf/local.yaml``. Reads the train
stage's ``model.pt``, ``user_factors/``, ``item_factors/`` and ``meta.json``
and the prepare stage's output; writes under ``score.output``:
``recommendations/`` (``user_id, rank, item_id, score, fallback, source,
model_version``; ``source``: ``model``, ``folded_in`` or ``fallback``), ``nested/`` (ALS's ``userId, recommendations:
array<struct<movieId, rating>>``), ``csv/`` and ``jsonl/`` when configured,
``report.json``, ``folded_user_factors/`` with ``score.ratings``
(:mod:`cfmodel.score.fold_in`) and ``_SUCCESS``. Exit code 0 on success, 2 for bad input or
config (the item table over ``score.broadcast_max_mb`` among them). The
example lists printed after the run are a courtesy: a problem with them (a bad
``score.titles``) is a warning, never a failed stage.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.cli import job_parser, run_main, start_job
from cfmodel.config import Config
from cfmodel.score.fold_in import (fold_in_frame, fold_in_items_frame, newer_ratings, prepared_ratings,
                                   refreshed_users)
from cfmodel.lists import (ScoreInputs, build_scorer, load_inputs, output_frames, read_user_list,
                                     recommend, seen_items, users_to_score)
from cfmodel.session import spark_session
from cfmodel.storage import Storage, atomic_output
from cfmodel.titles import read_titles, with_titles

LOG = logging.getLogger(__name__)
# What the score column holds, written into the outputs' schema (Parquet keeps it) and report.json.
SCORE_MEANING = {"predicted_rating": "predicted rating, on the training data's rating scale",
                 "ranking_score": "ranking score of a ranking objective: orders a user's list, not a rating"}


def run(spark: SparkSession, cfg: Config, overwrite: bool) -> Tuple[Dict[str, Any], Optional[pd.DataFrame]]:
    """The score stage on a running session; returns (report, the first users' lists for display)."""
    sc, user_col, item_col = cfg.score, cfg.prepare.user_col, cfg.prepare.item_col
    started = time.time()
    storage = Storage(spark)
    # Arrow batches many blocks long: per-batch overhead stays small, blocks stay cache-sized.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(max(sc.block_size, 8192)))
    with atomic_output(storage, sc.output, overwrite) as tmp:
        inputs = load_inputs(spark, storage, sc)
        known_items = inputs.items
        newer = newer_ratings(spark, cfg).persist() if sc.ratings else None
        if newer is not None:
            inputs = with_new_items(inputs, fold_in_items_frame(newer, inputs.model, inputs.users, known_items, sc))
        scorer = build_scorer(inputs, sc)
        version = sc.model_version or inputs.model.version

        subset = (read_user_list(spark, sc.users, user_col, inputs.users.schema["user_id"].dataType)
                  if sc.users else None)
        frame = users_to_score(inputs.list_user_factors, inputs.users,
                               seen_items(sc.data, spark, sc.exclude_valid), subset)
        frame, folded = _with_newer_ratings(cfg, inputs, known_items, frame, subset, newer)
        long = (recommend(frame, scorer, spark, sc.partitions)
                .withColumn("score", F.col("score").alias("score", metadata={"comment": SCORE_MEANING[
                    inputs.model.list_score]})))
        long = with_source(long, folded).withColumn("model_version", F.lit(version)).persist()
        if folded is not None:
            (folded.where(F.col("features").isNotNull())
             .select(F.col("user_id").alias("id"), "bias", "features").write.parquet(f"{tmp}/folded_user_factors"))
        for name, (fmt, out) in output_frames(long, sc.formats, sc.output_files, user_col, item_col).items():
            out.write.format(fmt).option("header", True).save(f"{tmp}/{name}")
        stats = long.agg(F.countDistinct("user_id").alias("users"), F.count(F.lit(1)).alias("rows"),
                         F.countDistinct(F.when(F.col("fallback"), F.col("user_id"))).alias("fallback"),
                         F.countDistinct(F.when(F.col("source") == "folded_in", F.col("user_id"))).alias("folded")
                         ).first()
        report = {"stage": "score", "output": storage.qualify(sc.output), "model_version": version,
                  "model": inputs.model.args.name, "objective": inputs.model.objective,
                  "score": inputs.model.list_score, "users_scored": stats["users"],
                  "fallback_users": stats["fallback"], "folded_in_users": stats["folded"],
                  "refreshed_users": refreshed_users(folded, inputs.users) if sc.fold_in_refresh else 0,
                  "folded_in_items": inputs.new_items,
                  "model_users": stats["users"] - stats["fallback"] - stats["folded"],
                  "rows_written": stats["rows"], "top_n": sc.top_n,
                  "items": len(scorer.items.ids), "candidate_items": int(scorer.items.candidate.sum()),
                  "seconds": round(time.time() - started, 2)}
        storage.write_json(f"{tmp}/report.json", report)
        examples = first_lists(long, sc.show_examples)
        long.unpersist()
        for cached in (folded, newer):
            if cached is not None:
                cached.unpersist()
    LOG.info("score report: %s", json.dumps(report, sort_keys=True))
    return report, examples


def with_new_items(inputs: ScoreInputs, new: DataFrame) -> ScoreInputs:
    """``inputs`` with the folded-in movies (``fold_in_items_frame``) appended to the item tables and map."""
    new = new.persist()
    count = new.count()
    if not count:
        new.unpersist()
        return inputs
    factors = new.select(F.col("item_id").alias("id"), F.col("item_idx").alias("idx"), "bias", "features")
    table = inputs.list_item_factors.select("id", "idx", "bias", "features").unionByName(factors)
    # The folded factors are list factors: a ranking model's rating table (if any) does not get them.
    return dataclasses.replace(
        inputs, item_factors=table if inputs.model.spec.lists_by_rating else inputs.item_factors,
        list_item_factors=table, new_items=count,
        items=inputs.items.unionByName(new.select("item_id", "item_idx", "n_ratings", "mean_rating"),
                                       allowMissingColumns=True))


def _with_newer_ratings(cfg: Config, inputs: ScoreInputs, known_items: DataFrame, frame: DataFrame,
                        subset: Optional[DataFrame], newer: Optional[DataFrame]):
    """(the users to score, the folded-in users or None). With ``score.ratings``, the users the model does not
    know take their folded-in factors (only those in ``score.users`` when it is set), and every user's newer
    ratings join the movies their list leaves out."""
    sc = cfg.score
    if newer is None:
        return frame, None
    history = prepared_ratings(newer.sparkSession, sc.data) if sc.fold_in_refresh else None
    folded = fold_in_frame(newer, inputs.model, inputs.users, known_items, sc, history)
    if subset is not None:
        folded = folded.join(subset.select("user_id"), "user_id", "left_semi")
    folded = folded.persist()
    rated = (newer.join(inputs.items.select("item_id", "item_idx"), "item_id")
             .groupBy("user_id").agg(F.collect_list("item_idx").alias("_newer")))
    none = F.array().cast("array<int>")
    frame = (frame.join(folded.select("user_id"), "user_id", "left_anti").unionByName(folded)
             .join(rated, "user_id", "left")
             .withColumn("seen", F.array_union(F.coalesce("seen", none), F.coalesce("_newer", none))).drop("_newer"))
    return frame, folded


def with_source(long: DataFrame, folded: Optional[DataFrame]) -> DataFrame:
    """The lists with ``source``: how each user's list was made (``model``, ``folded_in`` or ``fallback``)."""
    if folded is None:
        flagged = long.withColumn("_folded", F.lit(False))
    else:
        ids = folded.where(F.col("features").isNotNull()).select("user_id", F.lit(True).alias("_folded"))
        flagged = long.join(F.broadcast(ids), "user_id", "left")
    source = (F.when(F.col("fallback"), "fallback").when(F.coalesce(F.col("_folded"), F.lit(False)), "folded_in")
              .otherwise("model"))
    return flagged.select("user_id", "rank", "item_id", "score", "fallback", source.alias("source"))


def first_lists(long: DataFrame, n_users: int) -> Optional[pd.DataFrame]:
    """The lists of the ``n_users`` lowest user ids, for display (None when ``n_users`` is 0)."""
    if not n_users:
        return None
    first = [r.user_id for r in long.select("user_id").distinct().orderBy("user_id").limit(n_users).collect()]
    return long.where(F.col("user_id").isin(first)).orderBy("user_id", "rank").toPandas()


def print_examples(storage: Storage, examples: Optional[pd.DataFrame], titles: Optional[str]) -> None:
    """Print the example lists, with titles when ``titles`` can be read.

    Runs after the output is published, so it must not fail the stage: a
    titles file that is missing or unreadable is a warning (from
    :func:`cfmodel.titles.read_titles`), and the lists are shown by id.
    """
    if examples is None or not len(examples):
        return
    examples = with_titles(examples, read_titles(storage, titles))
    for user_id, recs in examples.groupby("user_id", sort=True):
        print(f"\nuser {user_id}{' (fallback)' if recs['fallback'].iloc[0] else ''}:")
        for row in recs.itertuples():
            title = f"  {row.title}" if "title" in recs.columns and pd.notna(row.title) else ""
            print(f"  {row.rank:>2}. {row.item_id:<8} {row.score:.2f}{title}")


def _run(argv: List[str]) -> int:
    args = job_parser("Top-N recommendations for every user.").parse_args(argv)
    cfg = start_job(args)
    with spark_session(cfg.spark) as spark:
        report, examples = run(spark, cfg, args.overwrite)
        print(json.dumps(report, indent=2, sort_keys=True))
        print_examples(Storage(spark), examples, cfg.score.titles)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for ``jobs/score.py`` (spark-submit) and the ``cf-score`` console script."""
    return run_main(_run, argv)
