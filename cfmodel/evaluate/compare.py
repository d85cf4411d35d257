"""Evaluate the trained model and the baselines on the same validation split.

Every method is judged by the same code: rating predictions for the held-out
pairs through :func:`cfmodel.evaluate.metrics.rating_metrics`, and top-k lists
(made by the score stage's :class:`cfmodel.model.topn.BlockScorer`, excluding
each user's *training* ratings only, since the held-out ones are what a list
should find) through :func:`cfmodel.evaluate.metrics.ranking_metrics`. The
model's scores come from its own head; the baselines' factor tables (ALS, the
bias model, popularity) are scored by the dot-product head.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.config import EvaluateConfig, ScoreConfig
from cfmodel.dataset import PreparedData
from cfmodel.errors import InputError
from cfmodel.evaluate.baselines import als_checkpoints, als_factors, fit_als, fit_biases, fit_implicit_als, global_mean
from cfmodel.evaluate.ease import ease_lists
from cfmodel.evaluate.metrics import catalogue_coverage, ranking_metrics, rating_metrics, relevant_items
from cfmodel.evaluate.predict import predict_pairs
from cfmodel.model import CFModule, dot_head
from cfmodel.model.topn import BlockScorer
from cfmodel.lists import ScoreInputs, collect_seen, fallback_ranking, item_table, recommend, users_to_score
from cfmodel.storage import Storage

LOG = logging.getLogger(__name__)
COLUMNS = ("rmse", "mae", "precision", "recall", "ndcg", "map", "coverage")
BASELINE_ORDER = ("global_mean", "biases", "popular", "als", "implicit_als", "ease")


@dataclass
class HeldOut:
    """The prepare output's splits, each with ``user_idx, item_idx, rating, user_id, item_id``."""

    train: DataFrame
    valid: DataFrame
    users: DataFrame
    items: DataFrame
    train_items: DataFrame  # items/ with n_ratings and mean_rating from the training split alone

    def release(self) -> None:
        """Unpersist the cached splits (a long-lived session would otherwise keep them, and serve them to a
        later read of the same path)."""
        for frame in (self.train, self.valid, self.train_items):
            frame.unpersist()


def load_split(spark: SparkSession, prepared: str) -> HeldOut:
    """Read ``train/``, ``valid/``, ``users/``, ``items/``; add original ids when written without them."""
    data = PreparedData(prepared, Storage(spark))
    users, items = data.frame(spark, "users"), data.frame(spark, "items")

    def with_ids(frame: DataFrame) -> DataFrame:
        if {"user_id", "item_id"} <= set(frame.columns):  # written with prepare.keep_ids
            return frame.select("user_idx", "item_idx", "rating", "user_id", "item_id")
        frame = frame.select("user_idx", "item_idx", "rating")
        return (frame.join(users.select("user_idx", "user_id"), "user_idx")
                .join(items.select("item_idx", "item_id"), "item_idx"))

    train, valid = (with_ids(data.frame(spark, s)) for s in ("train", "valid"))
    # Popularity and candidate counts from training rows only: the held-out rows must not leak into them.
    counts = train.groupBy("item_idx").agg(F.count(F.lit(1)).cast("int").alias("n_ratings"),
                                           F.avg("rating").cast("float").alias("mean_rating"))
    train_items = (items.select("item_id", "item_idx").join(counts, "item_idx", "left")
                   .fillna({"n_ratings": 0, "mean_rating": 0.0}))
    return HeldOut(train.cache(), valid.cache(), users, items, train_items.cache())


def _with_id(factors: DataFrame, id_map: DataFrame, side: str) -> DataFrame:
    return factors.join(id_map.select(F.col(f"{side}_idx").alias("idx"), F.col(f"{side}_id").alias("id")), "idx")


def top_k(spark: SparkSession, split: HeldOut, user_factors: DataFrame, item_factors: DataFrame, head: CFModule,
          eval_users: DataFrame, k: int, fallback: str = "popular") -> DataFrame:
    """Long-form top-``k`` lists for ``eval_users`` (``user_id``), training items excluded.

    Factor tables are ``idx, bias, features`` (as exported, or a baseline's),
    combined into scores by ``head``.
    """
    cfg = ScoreConfig(top_n=k, fallback=fallback, exclude_valid=False)
    users = _with_id(user_factors, split.users, "user")
    table = item_table(_with_id(item_factors, split.items, "item"), split.train_items, cfg)
    fallback_idx, fallback_score = fallback_ranking(table, split.train_items, fallback, 0.0, head)
    scorer = BlockScorer(table, fallback_idx, fallback_score, k, head, cfg.block_size, 1)
    frame = users_to_score(users, split.users, collect_seen(split.train), eval_users)
    return recommend(frame, scorer, spark)


def _ranking_row(recs: DataFrame, relevant: DataFrame, k: int, n_items: int) -> Dict[str, float]:
    recs = recs.cache()
    try:
        row = ranking_metrics(recs, relevant, k)
        row["coverage"] = catalogue_coverage(recs, n_items)
    finally:
        recs.unpersist()
    return row


def evaluate_all(spark: SparkSession, split: HeldOut, inputs: ScoreInputs, cfg: EvaluateConfig,
                 rating_range: tuple, checkpoints: Optional[str] = None) -> Dict[str, object]:
    """Metrics for the model and every configured baseline. ALS fits of more than 10 iterations checkpoint
    their factors under ``checkpoints`` (:func:`cfmodel.evaluate.baselines.als_checkpoints`), removed at the
    end: a directory every executor reaches (the evaluate stage passes one beside its output); None, a new
    one under the driver's temporary directory, which only a local master's executors share.

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
    pairs = split.valid.select("user_idx", "item_idx", "rating")
    result: Dict[str, object] = {"users": 0, "table": []}
    trained = inputs.model

    def model():
        # Rating predictions only from a model that predicts ratings: a ranking objective's scores are not.
        preds = (predict_pairs(spark, pairs, _idx(inputs.user_factors), _idx(inputs.item_factors),
                               trained.head()).cache() if trained.predicts_ratings else None)
        result["valid_predictions"] = preds
        return preds, top_k(spark, split, _idx(inputs.list_user_factors), _idx(inputs.list_item_factors),
                            trained.list_head(), eval_users, cfg.k)

    label = trained.args.name if trained.spec.lists_by_rating else f"{trained.args.name}, {trained.objective}"
    methods = [(f"model ({label})", model)]
    judge = lambda recs: _ranking_row(recs, relevant, cfg.k, n_items)  # noqa: E731
    methods += _baselines(spark, split, _idx(inputs.item_factors), pairs, eval_users, cfg, rating_range, judge)
    checkpoints = checkpoints or os.path.join(tempfile.gettempdir(), f"cfmodel-als-{uuid.uuid4().hex}")
    with als_checkpoints(spark, checkpoints, cfg.als_max_iter):
        for method, make in methods:
            row = _judged(method, make, judge)
            if row is not None:
                result["users"] = row.pop("users", result["users"])
                LOG.info("evaluated %s: %s", row["method"], row)
                result["table"].append({c: row.get(c) for c in ("method",) + COLUMNS + ("seconds",)})
    relevant.unpersist()
    if trained.predicts_ratings and result["table"][0]["rmse"] is None:
        raise InputError("the model produced no rating predictions")
    return result


def _judged(method: str, make, judge) -> Optional[Dict[str, object]]:
    """One method's row (with ``users`` when it made lists), or None when ``make`` skipped it."""
    started = time.time()
    predictions, recs, *named = make()
    if recs is None and predictions is None:
        return None  # skipped, with the reason logged
    row: Dict[str, object] = {"method": named[0] if named else method}
    if predictions is not None:
        row.update({k: v for k, v in rating_metrics(predictions).items() if k in ("rmse", "mae")})
    if recs is not None:
        # A baseline that had to judge its lists to choose them hands over the judged metrics.
        row.update(recs if isinstance(recs, dict) else judge(recs))
    row["seconds"] = round(time.time() - started, 2)
    return row


def _baselines(spark: SparkSession, split: HeldOut, item_factors: DataFrame, pairs: DataFrame,
               eval_users: DataFrame, cfg: EvaluateConfig, rating_range: tuple, judge) -> List[tuple]:
    """``(method, make)`` for each configured baseline; ``make()`` returns (predictions or None, lists or their
    metrics from ``judge`` or None [, the method's name when it depends on the fit]); both None: skipped.
    ``judge(lists)`` scores lists."""
    low, high = rating_range
    mean = global_mean(split.train)

    def biases():
        model = fit_biases(split.train, cfg.bias_reg, mean)
        return model.predict(pairs, low, high), top_k(spark, split, model.user_factors(), model.item_factors(),
                                                      dot_head(), eval_users, cfg.k)

    def popular():
        # No user has factors, so every list is the fallback: the most rated items.
        none = split.users.select(F.col("user_idx").alias("idx"), F.lit(None).cast("float").alias("bias"),
                                  F.lit(None).cast("array<float>").alias("features")).where(F.lit(False))
        return None, top_k(spark, split, none, item_factors, dot_head(), eval_users, cfg.k)

    def als():
        model = fit_als(split.train.select("user_idx", "item_idx", "rating"), cfg.als_n_factors, cfg.als_reg,
                        cfg.als_max_iter, cfg.seed)
        preds = model.transform(pairs).withColumn(
            "prediction", F.when(F.isnan("prediction"), F.lit(mean)).otherwise(F.col("prediction")))
        users_f, items_f = als_factors(model)
        return preds, top_k(spark, split, users_f, items_f, dot_head(), eval_users, cfg.k)

    def implicit_als():
        return _best_implicit_als(spark, split, eval_users, cfg, judge)

    def ease():
        return None, ease_lists(spark, split.train, eval_users, split.users, split.items, cfg.k, cfg.ease_lambda,
                                cfg.ease_max_items), f"EASE (lambda {cfg.ease_lambda:g})"

    every = {"global_mean": ("global mean", lambda: (pairs.withColumn("prediction", F.lit(mean)), None)),
             "biases": ("user + movie biases", biases), "popular": ("most popular", popular),
             "als": (f"ALS (rank {cfg.als_n_factors}, reg {cfg.als_reg})", als),
             "implicit_als": ("implicit ALS", implicit_als), "ease": ("EASE", ease)}
    return [every[name] for name in BASELINE_ORDER if name in cfg.baselines]


def _best_implicit_als(spark: SparkSession, split: HeldOut, eval_users: DataFrame, cfg: EvaluateConfig, judge):
    """(None, metrics, name) of the implicit-ALS grid point with the best NDCG; every point is logged."""
    best = None
    train = split.train.select("user_idx", "item_idx", "rating").cache()
    for rank in cfg.implicit_als_n_factors:
        for reg in cfg.implicit_als_regs:
            for alpha in cfg.implicit_als_alphas:
                users_f, items_f = als_factors(fit_implicit_als(train, rank, reg, alpha, cfg.als_max_iter, cfg.seed))
                recs = top_k(spark, split, users_f, items_f, dot_head(), eval_users, cfg.k)
                metrics = judge(recs)
                LOG.info("implicit ALS rank %d, reg %g, alpha %g: NDCG@%d %.4f", rank, reg, alpha, cfg.k,
                         metrics["ndcg"])
                if best is None or metrics["ndcg"] > best[0]["ndcg"]:
                    best = (metrics, f"implicit ALS (rank {rank}, reg {reg:g}, alpha {alpha:g})")
    train.unpersist()
    return None, best[0], best[1]


def _idx(factors: DataFrame) -> DataFrame:
    return factors.select("idx", "bias", "features")
