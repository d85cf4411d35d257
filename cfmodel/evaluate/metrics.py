"""Evaluation metrics, computed in Spark.

Rating metrics (RMSE, MAE) compare predicted with held-out ratings. Ranking
metrics judge top-N lists against the held-out ratings at or above a relevance
threshold, with ``pyspark.ml.evaluation.RankingEvaluator``:

- precision@k: relevant items among the first k, divided by k;
- recall@k: relevant items among the first k, divided by the user's relevant items;
- NDCG@k: binary-relevance discounted gain ``1 / log2(rank + 1)``, divided by the
  ideal gain of ``min(k, relevant)`` hits;
- MAP@k: the mean over hits of precision at each hit's rank, divided by
  ``min(k, relevant)``.

Each is averaged over the users that have at least one relevant held-out item
(a user with none cannot be scored by any of them). A user without a list
counts with an empty list, so missing users lower the averages rather than
vanish from them.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cfmodel.errors import InputError

RANKING_METRICS = {"precision": "precisionAtK", "recall": "recallAtK", "ndcg": "ndcgAtK",
                   "map": "meanAveragePrecisionAtK"}


def rating_metrics(frame: DataFrame, label: str = "rating", prediction: str = "prediction") -> Dict[str, float]:
    """``rmse``, ``mse``, ``mae`` and the row count ``n`` of ``prediction`` against ``label``.

    Raises
    ------
    InputError
        No rows, or a null prediction (a metric over the rest would flatter the model).
    """
    err = F.col(prediction) - F.col(label)
    row = frame.agg(F.count(F.lit(1)).alias("n"), F.avg(err * err).alias("mse"), F.avg(F.abs(err)).alias("mae"),
                    F.sum(F.col(prediction).isNull().cast("int")).alias("missing")).first()
    if not row["n"]:
        raise InputError("no rows to evaluate")
    if row["missing"]:
        raise InputError(f"{row['missing']} of {row['n']} rows have no prediction in column '{prediction}'")
    return {"rmse": math.sqrt(row["mse"]), "mse": row["mse"], "mae": row["mae"], "n": row["n"]}


def _label(frame: DataFrame, item: str):
    """Spark's RankingEvaluator takes items as doubles: a number id as itself, a text id as its 64-bit hash
    (two of n text ids share a double with odds about n² / 2^54: 5e-9 for 10,000 items)."""
    column = F.col(item)
    return (F.xxhash64(column) if dict(frame.dtypes)[item] == "string" else column).cast("double")


def relevant_items(held_out: DataFrame, threshold: Optional[float], user: str = "user_id", item: str = "item_id",
                   rating: str = "rating") -> DataFrame:
    """``user, relevant array<double>``: each user's held-out items rated at or above ``threshold``
    (every held-out item when ``threshold`` is None, as the implicit-feedback benchmarks count)."""
    kept = held_out if threshold is None else held_out.where(F.col(rating) >= threshold)
    return kept.groupBy(user).agg(F.collect_list(_label(kept, item)).alias("relevant"))


def ranked_lists(recs: DataFrame, k: int, user: str = "user_id", item: str = "item_id",
                 rank: str = "rank") -> DataFrame:
    """``user, predicted array<double>``: each user's first ``k`` items in rank order."""
    ordered = F.array_sort(F.collect_list(F.struct(F.col(rank).alias("r"), _label(recs, item).alias("i"))))
    return (recs.where(F.col(rank) <= k).groupBy(user).agg(ordered.alias("_l"))
            .select(user, F.transform("_l", lambda s: s["i"]).alias("predicted")))


def ranking_metrics(recs: DataFrame, relevant: DataFrame, k: int, user: str = "user_id") -> Dict[str, float]:
    """precision, recall, NDCG and MAP at ``k``, and the number of ``users`` averaged over.

    Parameters
    ----------
    recs
        Long-form lists: ``user``, ``item_id``, ``rank`` (1 = best).
    relevant
        From :func:`relevant_items`.
    """
    joined = (relevant.join(ranked_lists(recs, k, user), user, "left")
              .select(F.coalesce("predicted", F.array().cast("array<double>")).alias("predicted"), "relevant")
              .cache())
    try:
        users = joined.count()
        if not users:
            raise InputError("no user has a relevant held-out rating; lower evaluate.relevance_threshold")
        out = {name: RankingEvaluator(metricName=metric, k=k, predictionCol="predicted",
                                      labelCol="relevant").evaluate(joined)
               for name, metric in RANKING_METRICS.items()}
    finally:
        joined.unpersist()
    out["users"] = users
    return out


def catalogue_coverage(recs: DataFrame, n_items: int, item: str = "item_id") -> float:
    """Share of the ``n_items`` candidate items that appear in at least one list."""
    return recs.select(item).distinct().count() / n_items if n_items else 0.0
