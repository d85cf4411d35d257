"""Predicted ratings for given (user, item) pairs, on Spark, from exported factors.

The pairs are joined to the user and item factor tables (a join on indices,
never a cross join) and each Arrow batch goes through the model's own
``score_pairs`` (its head, broadcast: see :meth:`cfmodel.model.TrainedModel.head`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfmodel.model import CFModule


def _matrix(column: pa.Array) -> torch.Tensor:
    # Arrow's buffers are read-only; torch wants writable memory, so take a (small) copy.
    flat = np.array(pc.list_flatten(column).to_numpy(zero_copy_only=False), dtype=np.float32)
    return torch.from_numpy(flat.reshape(len(column), -1))


def _vector(column: pa.Array) -> torch.Tensor:
    # A null bias (models without biases) counts as 0.
    return torch.from_numpy(np.array(pc.fill_null(column, 0.0).to_numpy(zero_copy_only=False), dtype=np.float32))


@torch.no_grad()
def predict_batch(head: CFModule, batch: pa.RecordBatch) -> np.ndarray:
    """float32 scores, one per row of ``batch`` (``u_features, u_bias, i_features, i_bias``)."""
    return head.score_pairs(_matrix(batch.column("u_features")), _matrix(batch.column("i_features")),
                            _vector(batch.column("u_bias")), _vector(batch.column("i_bias"))).numpy()


def predict_pairs(spark: SparkSession, pairs: DataFrame, user_factors: DataFrame, item_factors: DataFrame,
                  head: CFModule) -> DataFrame:
    """``pairs`` (with ``user_idx``, ``item_idx``) plus a float ``prediction`` column.

    Pairs whose user or item has no factors get a null prediction (the caller
    decides whether that is an error).
    """
    uf = user_factors.select(F.col("idx").alias("user_idx"), F.col("features").alias("u_features"),
                             F.col("bias").alias("u_bias"))
    itf = item_factors.select(F.col("idx").alias("item_idx"), F.col("features").alias("i_features"),
                              F.col("bias").alias("i_bias"))
    joined = pairs.join(uf, "user_idx", "left").join(itf, "item_idx", "left")
    names = [f.name for f in pairs.schema.fields]
    schema = T.StructType(pairs.schema.fields + [T.StructField("prediction", T.FloatType(), True)])
    shared = spark.sparkContext.broadcast(head.eval())

    def run(batches):
        model = shared.value
        for batch in batches:
            known = pc.and_(batch.column("u_features").is_valid(), batch.column("i_features").is_valid())
            has = known.to_numpy(zero_copy_only=False)
            pred = np.zeros(batch.num_rows, np.float32)
            if has.any():
                pred[has] = predict_batch(model, batch.filter(known))
            arrays = [batch.column(n) for n in names] + [pa.array(pred, pa.float32(), mask=~has)]
            yield pa.RecordBatch.from_arrays(arrays, names=names + ["prediction"])

    return joined.mapInArrow(run, schema)
