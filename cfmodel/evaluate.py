"""Evaluate the trained model and the baselines on the same validation split.

Every method is judged by the same code: rating predictions for the held-out
pairs through :func:`cfmodel.metrics.rating_metrics`, and top-k lists (made by
the scoring job's :class:`cfmodel.topn.BlockScorer`, excluding each user's
*training* ratings only, since the held-out ones are what a list should find)
through :func:`cfmodel.metrics.ranking_metrics`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.baselines import als_factors, fit_als, fit_biases, global_mean
from cfmodel.config import EvaluateConfig, ScoreConfig
from cfmodel.errors import InputError
from cfmodel.metrics import catalogue_coverage, ranking_metrics, rating_metrics, relevant_items
from cfmodel.predict import PairScorer, predict_pairs
from cfmodel.recommend import ScoreInputs, collect_seen, fallback_ranking, item_table, recommend, users_to_score
from cfmodel.topn import BlockScorer

LOG = logging.getLogger("cfmodel.evaluate")
COLUMNS = ("rmse", "mae", "precision", "recall", "ndcg", "map", "coverage")


@dataclass
class Split:
    """The prepare output's splits, each with ``user_idx, item_idx, rating, user_id, item_id``."""

    train: DataFrame
    valid: DataFrame
    users: DataFrame
    items: DataFrame
    train_items: DataFrame  # items/ with n_ratings and mean_rating from the training split alone


def load_split(spark: SparkSession, prepared: str) -> Split:
    """Read ``train/``, ``valid/``, ``users/``, ``items/``; add original ids when written without them."""
    users, items = spark.read.parquet(f"{prepared}/users"), spark.read.parquet(f"{prepared}/items")

    def with_ids(frame: DataFrame) -> DataFrame:
        if {"user_id", "item_id"} <= set(frame.columns):  # written with prepare.keep_ids
            return frame.select("user_idx", "item_idx", "rating", "user_id", "item_id")
        frame = frame.select("user_idx", "item_idx", "rating")
        return (frame.join(users.select("user_idx", "user_id"), "user_idx")
                .join(items.select("item_idx", "item_id"), "item_idx"))

    train, valid = (with_ids(spark.read.parquet(f"{prepared}/{s}")) for s in ("train", "valid"))
    # Popularity and candidate counts from training rows only: the held-out rows must not leak into them.
    counts = train.groupBy("item_idx").agg(F.count(F.lit(1)).cast("int").alias("n_ratings"),
                                           F.avg("rating").cast("float").alias("mean_rating"))
    train_items = (items.select("item_id", "item_idx").join(counts, "item_idx", "left")
                   .fillna({"n_ratings": 0, "mean_rating": 0.0}))
    return Split(train.cache(), valid.cache(), users, items, train_items.cache())


def _with_id(factors: DataFrame, id_map: DataFrame, side: str) -> DataFrame:
    return factors.join(id_map.select(F.col(f"{side}_idx").alias("idx"), F.col(f"{side}_id").alias("id")), "idx")


def top_k(spark: SparkSession, split: Split, user_factors: DataFrame, item_factors: DataFrame, model_args: dict,
          eval_users: DataFrame, k: int, net: Optional[dict] = None, fallback: str = "popular") -> DataFrame:
    """Long-form top-``k`` lists for ``eval_users`` (``user_id``), training items excluded.

    Factor tables are ``idx, bias, features`` (as exported, or a baseline's).
    """
    cfg = ScoreConfig(top_n=k, fallback=fallback, exclude_valid=False)
    inputs = ScoreInputs(model_args, _with_id(user_factors, split.users, "user"),
                         _with_id(item_factors, split.items, "item"), split.users, split.items, net)
    table = item_table(inputs.item_factors, split.train_items, model_args, cfg)
    fallback_idx, fallback_score = fallback_ranking(table, split.train_items, fallback, 0.0)
    scorer = BlockScorer(table, fallback_idx, fallback_score, k, cfg.block_size, 1, net)
    frame = users_to_score(inputs.user_factors, split.users, collect_seen(split.train), eval_users)
    return recommend(frame, scorer, spark)


def _ranking_row(recs: DataFrame, relevant: DataFrame, k: int, n_items: int) -> Dict[str, float]:
    recs = recs.cache()
    try:
        row = ranking_metrics(recs, relevant, k)
        row["coverage"] = catalogue_coverage(recs, n_items)
    finally:
        recs.unpersist()
    return row


def evaluate_all(spark: SparkSession, split: Split, inputs: ScoreInputs, cfg: EvaluateConfig,
                 rating_range: tuple) -> Dict[str, object]:
    """Metrics for the model and every configured baseline.

    Returns
    -------
    dict
        ``table``: one row per method (``method`` plus :data:`COLUMNS`, None where
        a method has no such output); ``users``: users the ranking metrics
        average over; ``valid_predictions``: the model's held-out predictions
        (a DataFrame, cached).
    """
    relevant = relevant_items(split.valid, cfg.relevance_threshold).cache()
    eval_users = relevant.select("user_id")
    n_items = split.items.count()
    table: List[Dict[str, object]] = []

    def add(method: str, predictions: Optional[DataFrame], recs: Optional[DataFrame], started: float) -> None:
        row: Dict[str, object] = {"method": method}
        if predictions is not None:
            row.update({k: v for k, v in rating_metrics(predictions).items() if k in ("rmse", "mae")})
        if recs is not None:
            metrics = _ranking_row(recs, relevant, cfg.k, n_items)
            users = metrics.pop("users")
            row.update(metrics)
            result["users"] = users
        row["seconds"] = round(time.time() - started, 2)
        LOG.info("evaluated %s: %s", method, row)
        table.append({c: row.get(c) for c in ("method",) + COLUMNS + ("seconds",)})

    result: Dict[str, object] = {"users": 0}
    started = time.time()
    pairs = split.valid.select("user_idx", "item_idx", "rating")
    scorer = PairScorer(inputs.model_args["name"],
                        None if inputs.model_args["name"] == "dot" else tuple(inputs.model_args["y_range"]),
                        inputs.net)
    model_preds = predict_pairs(spark, pairs, _idx(inputs.user_factors), _idx(inputs.item_factors), scorer).cache()
    add(f"model ({inputs.model_args['name']})", model_preds,
        top_k(spark, split, _idx(inputs.user_factors), _idx(inputs.item_factors), inputs.model_args, eval_users,
              cfg.k, inputs.net), started)
    result["valid_predictions"] = model_preds

    low, high = rating_range
    mean = global_mean(split.train)
    if "global_mean" in cfg.baselines:
        started = time.time()
        add("global mean", pairs.withColumn("prediction", F.lit(mean)), None, started)
    if "biases" in cfg.baselines:
        started = time.time()
        biases = fit_biases(split.train, cfg.bias_reg, mean)
        add("user + movie biases", biases.predict(pairs, low, high),
            top_k(spark, split, biases.user_factors(), biases.item_factors(), {"name": "dot"}, eval_users, cfg.k),
            started)
    if "popular" in cfg.baselines:
        started = time.time()
        none = split.users.select(F.col("user_idx").alias("idx"), F.lit(None).cast("float").alias("bias"),
                                  F.lit(None).cast("array<float>").alias("features")).where(F.lit(False))
        items = _idx(inputs.item_factors)
        add("most popular", None, top_k(spark, split, none, items, {"name": "dot"}, eval_users, cfg.k), started)
    if "als" in cfg.baselines:
        started = time.time()
        als = fit_als(split.train.select("user_idx", "item_idx", "rating"), cfg.als_rank, cfg.als_reg,
                      cfg.als_max_iter, cfg.seed)
        preds = als.transform(pairs).withColumn(
            "prediction", F.when(F.isnan("prediction"), F.lit(mean)).otherwise(F.col("prediction")))
        users_f, items_f = als_factors(als)
        add(f"ALS (rank {cfg.als_rank}, reg {cfg.als_reg})", preds,
            top_k(spark, split, users_f, items_f, {"name": "dot"}, eval_users, cfg.k), started)
    relevant.unpersist()
    if table and table[0]["rmse"] is None:
        raise InputError("the model produced no rating predictions")
    result["table"] = table
    return result


def _idx(factors: DataFrame) -> DataFrame:
    return factors.select("idx", "bias", "features")
