"""Contiguous int32 indices for user and item ids.

Indices follow the ascending order of the original ids, so the same ids get the
same indices whatever the partitioning or the order rows arrive in.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T


def build_index(ratings: DataFrame, id_col: str, idx_col: str) -> DataFrame:
    """A map ``id_col -> idx_col`` (0..n-1 by ascending id) with ``n_ratings`` and ``mean_rating``.

    Uses a distributed sort and ``zipWithIndex``, never collecting ids to the driver.
    """
    stats = (ratings.groupBy(id_col)
             .agg(F.count(F.lit(1)).cast("int").alias("n_ratings"),
                  F.avg("rating").cast("float").alias("mean_rating"))
             .orderBy(id_col))
    spark = ratings.sparkSession
    schema = T.StructType(stats.schema.fields[:1] + [T.StructField(idx_col, T.IntegerType(), False)] +
                          stats.schema.fields[1:])
    indexed = stats.rdd.zipWithIndex().map(lambda pair: (pair[0][0], int(pair[1]), *pair[0][1:]))
    return spark.createDataFrame(indexed, schema)


def apply_index(ratings: DataFrame, index: DataFrame, id_col: str, idx_col: str,
                broadcast: bool = False) -> DataFrame:
    """Add ``idx_col`` to ratings from an index built by :func:`build_index`; ``broadcast`` sends the index to
    every task (for an index small enough), so the ratings are not shuffled to meet it."""
    ids = index.select(id_col, idx_col)
    return ratings.join(F.broadcast(ids) if broadcast else ids, on=id_col, how="inner")
