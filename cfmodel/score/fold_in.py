"""Fresh lists for users who joined after training: fold them in at scoring time (``score.ratings``).

Ratings newer than the model (a prepare output, or a raw file in any format
prepare reads, cleaned by the same rules) are joined to the model's movies.
Each user the model does not know gets the factors its lists rank with, solved
against the fixed item tables (:meth:`TrainedModel.fold_in_list_solver
<cfmodel.model.trained.TrainedModel.fold_in_list_solver>`: a batched ridge
solve for a rating model, Newton steps on a full softmax for a ranking head),
per partition on the executors (``mapInArrow``): nothing is collected to the
driver. A user with fewer than ``score.fold_in_min_ratings`` of them keeps the
fallback list; every one of them has the movies they rated excluded from their
list. Movies the model does not know, rated by that many users it knows, are
solved against the fixed user tables (a ridge solve, or for a ranking model
Newton steps on their terms in every user's softmax) and join the candidates.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_type
from pyspark.sql.window import Window

from cfmodel.config import Config, ScoreConfig
from cfmodel.dataset import PreparedData
from cfmodel.model import TrainedModel
from cfmodel.ingest.source import read_ratings
from cfmodel.ingest.clean import clean_input, column_spec
from cfmodel.storage import Storage

FOLDED_SCHEMA = T.StructType([  # user_id: of the ids' type (int for MovieLens-style ids)
    T.StructField("user_id", T.IntegerType(), False),
    T.StructField("features", T.ArrayType(T.FloatType()), True),
    T.StructField("bias", T.FloatType(), True),
    T.StructField("seen", T.ArrayType(T.IntegerType()), False),
])


def newer_ratings(spark: SparkSession, cfg: Config) -> DataFrame:
    """``user_id, item_id, rating`` of ``score.ratings``: a prepare output's splits, or a raw input read and
    cleaned as prepare does (its quarantine gate included; duplicates keep the latest rating)."""
    path = cfg.score.ratings.rstrip("/")
    storage = Storage(spark)
    if storage.exists(f"{path}/meta.json"):  # a prepare output, not a raw input
        return prepared_ratings(spark, path)
    prep = dataclasses.replace(cfg.prepare, input=path)
    raw = read_ratings(spark, path, column_spec(prep), prep.input_format)
    # The ids are read as the model's were: a newcomer's id has the type of the ids it joins.
    id_types = PreparedData(cfg.score.data, storage).id_types
    return clean_input(raw.frame, prep, raw.feedback, id_types).ratings.select("user_id", "item_id", "rating")


def prepared_ratings(spark: SparkSession, path: str) -> DataFrame:
    """``user_id, item_id, rating`` of a prepare output (both splits)."""
    data = PreparedData(path, Storage(spark))
    frames = [data.frame(spark, split).select("user_id", "item_id", "rating") for split in ("train", "valid")]
    return frames[0].unionByName(frames[1])


def _solve_groups(rows: DataFrame, key: str, solver, min_ratings: int) -> DataFrame:
    """``key, features, bias, seen`` from ``key, items, ratings`` groups (``items``: the other side's indices):
    each partition's groups solved in one batch by ``solver``; nulls under ``min_ratings``."""
    shared = rows.sparkSession.sparkContext.broadcast(solver)
    key_type = rows.schema[key].dataType
    schema = pa.schema([(key, to_arrow_type(key_type), False), ("features", pa.list_(pa.float32())),
                        ("bias", pa.float32()), ("seen", pa.list_(pa.int32()), False)])

    def solve(batches):
        fold = shared.value
        for batch in batches:
            others = [np.asarray(v, np.int64) for v in batch.column("items").to_pylist()]
            values = [np.asarray(v, np.float64) for v in batch.column("ratings").to_pylist()]
            enough = np.array([len(o) >= min_ratings for o in others], bool)
            factors, biases = fold([o for o, e in zip(others, enough) if e],
                                   [v for v, e in zip(values, enough) if e]) if enough.any() else ([], [])
            at = np.cumsum(enough) - 1
            yield pa.RecordBatch.from_arrays(
                [batch.column(key),
                 pa.array([factors[at[n]].tolist() if e else None for n, e in enumerate(enough)], pa.list_(pa.float32())),
                 pa.array([float(biases[at[n]]) if e else None for n, e in enumerate(enough)], pa.float32()),
                 pa.array([o.astype(np.int32) for o in others], pa.list_(pa.int32()))], schema=schema)

    return rows.mapInArrow(solve, schema=T.StructType([T.StructField(key, key_type, False), *FOLDED_SCHEMA[1:]]))


def fold_in_items_frame(ratings: DataFrame, model: TrainedModel, users: DataFrame, items: DataFrame,
                        sc: ScoreConfig) -> DataFrame:
    """``item_id, item_idx, features, bias, n_ratings, mean_rating`` for the movies in ``ratings`` that the model
    does not know, rated by ``sc.fold_in_min_ratings`` or more users it knows (their factors fixed): new
    candidates, their list factors (:meth:`TrainedModel.fold_in_item_solver`), indexed after the model's movies."""
    known = ratings.join(users.select("user_id", "user_idx"), "user_id")
    rows = (known.join(items.select("item_id"), "item_id", "left_anti")
            .groupBy("item_id").agg(F.collect_list("user_idx").alias("items"),
                                    F.collect_list(F.col("rating").cast("double")).alias("ratings"),
                                    F.avg("rating").cast("float").alias("mean_rating")))
    stats = rows.select("item_id", "mean_rating")
    # Only a ranking model weighs a new movie's raters against everyone's ratings (a small collect).
    counts = _user_counts(known, len(model.user_ids)) if not model.spec.lists_by_rating else None
    solver = model.fold_in_item_solver(counts, sc.fold_in_reg, sc.fold_in_newton_steps, sc.fold_in_method)
    solved = _solve_groups(rows.drop("mean_rating"), "item_id", solver, sc.fold_in_min_ratings) \
        .where(F.col("features").isNotNull())
    order = Window.orderBy("item_id")
    return (solved.join(stats, "item_id")
            .select("item_id", (F.row_number().over(order) - 1 + len(model.item_ids)).cast("int").alias("item_idx"),
                    "features", "bias", F.size("seen").cast("int").alias("n_ratings"), "mean_rating"))


def _user_counts(rows: DataFrame, n_users: int) -> np.ndarray:
    """Each known user's ratings in ``rows`` (``user_idx``), by index: at most one int per user to the
    driver, which holds the model's user table anyway."""
    counts = np.zeros(n_users, np.int64)
    frame = rows.groupBy("user_idx").count().toPandas()
    counts[frame["user_idx"].to_numpy()] = frame["count"].to_numpy()
    return counts


def fold_in_frame(ratings: DataFrame, model: TrainedModel, users: DataFrame, items: DataFrame,
                  sc: ScoreConfig, history: Optional[DataFrame] = None) -> DataFrame:
    """``user_id, features, bias, seen`` for every user in ``ratings`` whom the model does not know (not in
    ``users``, the prepare output's map the model was trained on): folded-in list factors (what the model's
    lists rank with: :meth:`TrainedModel.fold_in_list_solver`) with ``sc.fold_in_min_ratings`` or more
    ratings of the model's movies, else nulls (the fallback).

    With ``history`` (``user_id, item_id, rating``: what the model was trained on; ``score.fold_in_refresh``)
    the users it knows who have newer ratings are refreshed too: solved afresh from their history and their
    newer ratings together, a newer rating of the same movie replacing the old one.
    """
    rated = ratings.join(users.select("user_id"), "user_id", "left_anti")
    if history is not None:
        returning = ratings.join(users.select("user_id"), "user_id", "left_semi")
        past = (history.join(returning.select("user_id").distinct(), "user_id", "left_semi")
                .join(returning.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti"))
        rated = rated.unionByName(returning).unionByName(past)
    rows = (rated.join(items.select("item_id", "item_idx"), "item_id")
            .groupBy("user_id").agg(F.collect_list("item_idx").alias("items"),
                                    F.collect_list(F.col("rating").cast("double")).alias("ratings")))
    solver = model.fold_in_list_solver(sc.fold_in_reg, sc.fold_in_newton_steps, sc.fold_in_method)
    return _solve_groups(rows, "user_id", solver, sc.fold_in_min_ratings)


def refreshed_users(folded: Optional[DataFrame], users: DataFrame) -> int:
    """How many of the folded-in users the model knew (refreshed by ``score.fold_in_refresh``)."""
    if folded is None:
        return 0
    return folded.where(F.col("features").isNotNull()).join(users.select("user_id"), "user_id", "left_semi").count()
