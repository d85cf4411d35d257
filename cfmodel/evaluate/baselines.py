"""Baselines evaluated beside the model, on the same split.

- ``global_mean``: every rating predicted as the training mean.
- ``biases``: ``mean + b_user + b_item``, the damped bias estimates
  ``b_item = sum(r - mean) / (n_item + reg)`` then
  ``b_user = sum(r - mean - b_item) / (n_user + reg)``; its top-N is the highest
  ``b_item`` the user has not rated.
- ``popular``: top-N by number of training ratings (no rating prediction).
- ``als``: Spark MLlib ALS fitted on the training split.
- ``implicit_als``: Spark MLlib ALS with ``implicitPrefs`` (ratings as
  confidence ``1 + alpha × r``), the best of a small rank × regParam × alpha
  grid by NDCG on the evaluated split (which flatters it, a conservative choice
  for a comparison against it).
- ``ease``: EASE (:mod:`cfmodel.evaluate.ease`), when the item count allows.

Each returns rating predictions for the held-out pairs and/or factor tables in
the layout :mod:`cfmodel.evaluate.predict` and :mod:`cfmodel.model.topn` use, so every
method is scored and ranked by the same code.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.storage import Storage

LOG = logging.getLogger(__name__)
# ALS cuts its factors' lineage every this many iterations, when the session has a checkpoint directory.
ALS_CHECKPOINT_INTERVAL = 10


@dataclass
class BiasModel:
    """The damped bias baseline."""

    mean: float
    user_bias: DataFrame   # user_idx, b_user
    item_bias: DataFrame   # item_idx, b_item

    def predict(self, pairs: DataFrame, low: Optional[float] = None, high: Optional[float] = None) -> DataFrame:
        """``pairs`` plus ``prediction``, clipped to [low, high] when given; unknown ids count as bias 0."""
        pred = (F.lit(self.mean) + F.coalesce(F.col("b_user"), F.lit(0.0))
                + F.coalesce(F.col("b_item"), F.lit(0.0)))
        if low is not None:
            pred = F.greatest(F.lit(low), pred)
        if high is not None:
            pred = F.least(F.lit(high), pred)
        return (pairs.join(self.user_bias, "user_idx", "left").join(self.item_bias, "item_idx", "left")
                .withColumn("prediction", pred.cast("float")).drop("b_user", "b_item"))

    def item_factors(self) -> DataFrame:
        """An item factor table (one zero feature, ``bias`` = b_item) ranking items by bias."""
        return self.item_bias.select(F.col("item_idx").alias("idx"), F.col("b_item").cast("float").alias("bias"),
                                     F.array(F.lit(0.0).cast("float")).alias("features"))

    def user_factors(self) -> DataFrame:
        return self.user_bias.select(F.col("user_idx").alias("idx"), F.col("b_user").cast("float").alias("bias"),
                                     F.array(F.lit(0.0).cast("float")).alias("features"))


def global_mean(train: DataFrame) -> float:
    """Mean training rating."""
    return float(train.agg(F.avg("rating")).first()[0])


def fit_biases(train: DataFrame, reg: float, mean: Optional[float] = None) -> BiasModel:
    """Damped user and item biases (``reg`` pseudo-ratings at the mean; pass ``mean`` if already known)."""
    mean = global_mean(train) if mean is None else mean
    item_bias = (train.groupBy("item_idx")
                 .agg((F.sum(F.col("rating") - mean) / (F.count(F.lit(1)) + reg)).alias("b_item")).cache())
    user_bias = (train.join(item_bias, "item_idx")
                 .groupBy("user_idx")
                 .agg((F.sum(F.col("rating") - mean - F.col("b_item")) / (F.count(F.lit(1)) + reg)).alias("b_user"))
                 .cache())
    return BiasModel(mean, user_bias, item_bias)


@contextmanager
def als_checkpoints(spark: SparkSession, directory: str, max_iter: int) -> Iterator[Optional[str]]:
    """Give ALS fits of ``max_iter`` iterations inside the block a checkpoint directory; yields it (None where
    none is needed).

    Without one, each ALS iteration adds to its factors' lineage, and a task of a long fit overflows the
    executor thread's stack while it is deserialised: at 25 iterations on local[2] the StackOverflowError
    killed the driver JVM. With one, ALS checkpoints every :data:`ALS_CHECKPOINT_INTERVAL` iterations. A fit
    of at most that many needs none and is left as it was. A directory the session already has (a user's,
    set on the SparkContext) is used as it is; otherwise ``directory`` (a place every executor reaches:
    evaluate passes one beside its output) is set for the block, then unset and removed with what ALS left
    there, after the block, which must be done with the fitted models' factors by then.
    """
    sc = spark.sparkContext
    if max_iter <= ALS_CHECKPOINT_INTERVAL:
        yield None
        return
    if sc.getCheckpointDir() is not None:
        yield sc.getCheckpointDir()
        return
    storage = Storage(spark)
    sc.setCheckpointDir(directory)
    LOG.info("ALS (%d iterations) checkpoints its factors every %d under %s", max_iter, ALS_CHECKPOINT_INTERVAL,
             directory)
    try:
        yield directory
    finally:
        unset_checkpoint_dir(sc)
        if storage.exists(directory):
            storage.delete(directory)


def unset_checkpoint_dir(sc) -> None:
    """Leave the SparkContext without a checkpoint directory. PySpark can set one but not unset it: this sets
    the context's own field through Py4J."""
    getattr(sc._jsc.sc(), "checkpointDir_$eq")(sc._jvm.scala.Option.empty())


def fit_als(train: DataFrame, rank: int, reg: float, max_iter: int, seed: int):
    """Spark MLlib ALS on ``user_idx, item_idx, rating``; NaN for pairs it has no factors for. Over
    :data:`ALS_CHECKPOINT_INTERVAL` iterations, call it inside :func:`als_checkpoints`."""
    als = ALS(rank=rank, regParam=reg, maxIter=max_iter, seed=seed, userCol="user_idx", itemCol="item_idx",
              ratingCol="rating", coldStartStrategy="nan", nonnegative=False,
              checkpointInterval=ALS_CHECKPOINT_INTERVAL)
    return als.fit(train)


def fit_implicit_als(train: DataFrame, rank: int, reg: float, alpha: float, max_iter: int, seed: int):
    """Spark MLlib ALS with implicit feedback on ``user_idx, item_idx, rating`` (ratings as confidence). Over
    :data:`ALS_CHECKPOINT_INTERVAL` iterations, call it inside :func:`als_checkpoints`."""
    als = ALS(rank=rank, regParam=reg, alpha=alpha, implicitPrefs=True, maxIter=max_iter, seed=seed,
              userCol="user_idx", itemCol="item_idx", ratingCol="rating", coldStartStrategy="nan", nonnegative=False,
              checkpointInterval=ALS_CHECKPOINT_INTERVAL)
    return als.fit(train)


def als_factors(model) -> tuple:
    """(user factors, item factors) of an ALSModel in the exported layout (``idx, bias, features``)."""
    def side(frame: DataFrame) -> DataFrame:
        return frame.select(F.col("id").alias("idx"), F.lit(0.0).cast("float").alias("bias"), "features")
    return side(model.userFactors), side(model.itemFactors)
