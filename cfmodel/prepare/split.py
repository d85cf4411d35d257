"""Validation splits by hashing, and the cold-start policy.

``random`` (the lesson's random validation indices): a row is in validation
when a hash of (user, item, seed) falls below ``valid_fraction``. ``per_user``
(stratified per user, as the published ranking benchmarks split, e.g.
Microsoft Recommenders' ``python_stratified_split``): each user's ratings are
ordered by that hash and the last ``round(valid_fraction × n)`` go to
validation, so every user keeps the same share. Unlike ``randomSplit`` on an
unordered frame, both give the same split whatever the partitioning, on any
cluster, on every rerun. ``time`` (the protocol of a scheduled job that trains on
the past and is judged on the future, e.g. the leave-latest-out split of
sequential recommenders' benchmarks): each user's latest ``valid_fraction`` of
rows by timestamp, or with ``prepare.split_time`` every row at or after one
global cutoff.
"""
from __future__ import annotations

from typing import Optional, Tuple

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

_BUCKETS = 1 << 30


def split_uniform(ratings: DataFrame, user: str, item: str, seed: int) -> Column:
    """A deterministic number in [0, 1) per (user, item, seed); string ids hash as text, numbers as longs."""
    types = dict(ratings.dtypes)
    keys = [F.col(c) if types[c] == "string" else F.col(c).cast("long") for c in (user, item)]
    h = F.xxhash64(*keys, F.lit(int(seed)).cast("long"))
    return F.pmod(h, F.lit(_BUCKETS)).cast("double") / _BUCKETS


def assign_split(ratings: DataFrame, valid_fraction: float, seed: int,
                 user: str = "user_id", item: str = "item_id") -> DataFrame:
    """Add ``is_valid``: true for about ``valid_fraction`` of the rows, chosen by hash."""
    return ratings.withColumn("is_valid", split_uniform(ratings, user, item, seed) < F.lit(valid_fraction))


def assign_split_per_user(ratings: DataFrame, valid_fraction: float, seed: int,
                          user: str = "user_id", item: str = "item_id") -> DataFrame:
    """Add ``is_valid``: for each user, ``round(valid_fraction × n)`` of their ``n`` rows, chosen by hash.

    The training share is ``round((1 - valid_fraction) × n)``, as the published
    75/25 stratified splits round it; a user with one rating keeps it in training.
    """
    draw = split_uniform(ratings, user, item, seed)
    order = Window.partitionBy(user).orderBy(draw, F.col(item))
    n = F.count(F.lit(1)).over(Window.partitionBy(user))
    train_share = F.round(n * F.lit(1.0 - valid_fraction))
    return ratings.withColumn("is_valid", F.row_number().over(order) > F.greatest(train_share, F.lit(1)))


def assign_split_by_time(ratings: DataFrame, valid_fraction: float, seed: int, cutoff: Optional[int] = None,
                         user: str = "user_id", item: str = "item_id") -> DataFrame:
    """Add ``is_valid``: each user's latest ``round(valid_fraction × n)`` rows by ``timestamp`` (ties by hash,
    shares rounded as :func:`assign_split_per_user` rounds them), or with ``cutoff`` (epoch seconds) every
    row at or after it: training on the past, judged on the future."""
    if cutoff is not None:
        return ratings.withColumn("is_valid", F.col("timestamp") >= F.lit(int(cutoff)))
    order = Window.partitionBy(user).orderBy(F.col("timestamp"), split_uniform(ratings, user, item, seed), F.col(item))
    n = F.count(F.lit(1)).over(Window.partitionBy(user))
    train_share = F.round(n * F.lit(1.0 - valid_fraction))
    return ratings.withColumn("is_valid", F.row_number().over(order) > F.greatest(train_share, F.lit(1)))


def split_rows(ratings: DataFrame, method: str, valid_fraction: float, seed: int,
               cutoff: Optional[int] = None) -> DataFrame:
    """``is_valid`` by ``prepare.split``: ``random``, ``per_user`` or ``time`` (``cutoff``: a global one)."""
    if method == "time":
        return assign_split_by_time(ratings, valid_fraction, seed, cutoff)
    if method == "per_user":
        return assign_split_per_user(ratings, valid_fraction, seed)
    if method == "random":
        return assign_split(ratings, valid_fraction, seed)
    raise ValueError(f"unknown split {method!r}")


def cold_start_rows(ratings: DataFrame, user: str = "user_id", item: str = "item_id",
                    broadcast: Tuple[bool, bool] = (False, False)) -> DataFrame:
    """Add ``is_cold``: a validation row whose user or item has no training row.

    ``broadcast``: (users, items) few enough to send the training ids to every task, so the ratings need
    not be shuffled to meet them.
    """
    train = ratings.where(~F.col("is_valid"))
    for col, flag, small in ((user, "_u_warm", broadcast[0]), (item, "_i_warm", broadcast[1])):
        ids = train.select(col).distinct().withColumn(flag, F.lit(True))
        ratings = ratings.join(F.broadcast(ids) if small else ids, on=col, how="left")
    return (ratings.withColumn("is_cold", F.col("is_valid") & (F.col("_u_warm").isNull() | F.col("_i_warm").isNull()))
            .drop("_u_warm", "_i_warm"))


def apply_cold_start(ratings: DataFrame, policy: str) -> DataFrame:
    """Resolve cold validation rows: ``train`` moves them to training, ``drop``
    removes them, ``keep`` leaves them in validation."""
    if policy == "train":
        return ratings.withColumn("is_valid", F.col("is_valid") & ~F.col("is_cold"))
    if policy == "drop":
        return ratings.where(~F.col("is_cold"))
    if policy == "keep":
        return ratings
    raise ValueError(f"unknown cold-start policy {policy!r}")


def split_frames(ratings: DataFrame) -> Tuple[DataFrame, DataFrame]:
    """(train, valid) from a frame with ``is_valid``, without the helper columns."""
    helpers = [c for c in ("is_valid", "is_cold") if c in ratings.columns]
    return (ratings.where(~F.col("is_valid")).drop(*helpers),
            ratings.where(F.col("is_valid")).drop(*helpers))
