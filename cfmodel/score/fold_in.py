"""Fresh lists for users who joined after training: fold them in at scoring time (``score.ratings``).

Ratings newer than the model (a prepare output, or a raw file in any format
prepare reads, cleaned by the same rules) are joined to the model's movies.
Each user the model does not know gets factors and a bias from a batched ridge
solve against the fixed item factors (:meth:`TrainedModel.fold_in_solver
<cfmodel.model.trained.TrainedModel.fold_in_solver>`), per partition on the
executors (``mapInArrow``): nothing is collected to the driver. A user with
fewer than ``score.fold_in_min_ratings`` of them keeps the fallback list; every
one of them has the movies they rated excluded from their list.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfmodel.config import Config
from cfmodel.model import TrainedModel
from cfmodel.prepare.clean import drop_duplicates_latest, good_rows
from cfmodel.prepare.source import read_ratings
from cfmodel.prepare.transforms import classify_input, column_spec
from cfmodel.storage import Storage

FOLDED_SCHEMA = T.StructType([
    T.StructField("user_id", T.IntegerType(), False),
    T.StructField("features", T.ArrayType(T.FloatType()), True),
    T.StructField("bias", T.FloatType(), True),
    T.StructField("seen", T.ArrayType(T.IntegerType()), False),
])


def newer_ratings(spark: SparkSession, cfg: Config) -> DataFrame:
    """``user_id, item_id, rating`` of ``score.ratings``: a prepare output's splits, or a raw input read and
    cleaned as prepare does (its quarantine gate included; duplicates keep the latest rating)."""
    path = cfg.score.ratings.rstrip("/")
    if Storage(spark).exists(f"{path}/meta.json"):
        frames = [spark.read.parquet(f"{path}/{split}").select("user_id", "item_id", "rating")
                  for split in ("train", "valid")]
        return frames[0].unionByName(frames[1])
    prep = dataclasses.replace(cfg.prepare, input=path)
    raw = read_ratings(spark, path, column_spec(prep), prep.input_format).frame
    classified, _, _, _ = classify_input(raw, prep)
    return drop_duplicates_latest(good_rows(classified)).select("user_id", "item_id", "rating")


def fold_in_frame(ratings: DataFrame, model: TrainedModel, items: DataFrame, min_ratings: int, reg: float,
                  newton_steps: int) -> DataFrame:
    """``user_id, features, bias, seen`` for every user in ``ratings`` whom the model does not know:
    folded-in factors with ``min_ratings`` or more ratings of the model's movies, else nulls (the fallback)."""
    known = F.broadcast(ratings.sparkSession.createDataFrame(
        [(int(u),) for u in model.user_ids], "user_id int"))
    rows = (ratings.join(known, "user_id", "left_anti")
            .join(items.select("item_id", "item_idx"), "item_id")
            .groupBy("user_id").agg(F.collect_list("item_idx").alias("items"),
                                    F.collect_list(F.col("rating").cast("double")).alias("ratings")))
    shared = ratings.sparkSession.sparkContext.broadcast(model.fold_in_solver(reg, newton_steps))

    def solve(batches):
        solver = shared.value
        for batch in batches:
            items_col = [np.asarray(v, np.int64) for v in batch.column("items").to_pylist()]
            ratings_col = [np.asarray(v, np.float64) for v in batch.column("ratings").to_pylist()]
            enough = np.array([len(i) >= min_ratings for i in items_col], bool)
            factors, biases = solver([i for i, e in zip(items_col, enough) if e],
                                     [r for r, e in zip(ratings_col, enough) if e]) if enough.any() else ([], [])
            rows_out = iter(range(len(factors)))
            features, bias = [], []
            for e in enough:
                n = next(rows_out) if e else None
                features.append(None if n is None else factors[n].tolist())
                bias.append(None if n is None else float(biases[n]))
            yield pa.RecordBatch.from_arrays(
                [batch.column("user_id"), pa.array(features, pa.list_(pa.float32())), pa.array(bias, pa.float32()),
                 pa.array([i.astype(np.int32) for i in items_col], pa.list_(pa.int32()))],
                schema=pa.schema([("user_id", pa.int32(), False), ("features", pa.list_(pa.float32())),
                                  ("bias", pa.float32()), ("seen", pa.list_(pa.int32()), False)]))

    return rows.mapInArrow(solve, schema=FOLDED_SCHEMA)
