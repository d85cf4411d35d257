"""Predicted ratings for given (user, item) pairs, on Spark, from exported factors.

The pairs are joined to the user and item factor tables (a join on indices,
never a cross join) and each Arrow batch is put through the model's
prediction: the dot product (``dot``), plus biases through the sigmoid range
(``dot_bias``), or the network's layers (``embedding_net``, whose weights are
broadcast).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfmodel.models import embedding_net_layers, sigmoid_range


def _matrix(column: pa.Array) -> torch.Tensor:
    # Arrow's buffers are read-only; torch wants writable memory, so take a (small) copy.
    flat = np.array(pc.list_flatten(column).to_numpy(zero_copy_only=False), dtype=np.float32)
    return torch.from_numpy(flat.reshape(len(column), -1))


@dataclass
class PairScorer:
    """Predicts a batch of pairs; picklable for broadcasting.

    Batches carry ``u_features``, ``u_bias``, ``i_features``, ``i_bias`` and any
    other columns, which are passed through.
    """

    name: str
    y_range: Optional[tuple]
    net: Optional[dict] = None

    def _net(self):
        return embedding_net_layers(self.net["args"], self.net["state"])

    @torch.no_grad()
    def predict(self, batch: pa.RecordBatch) -> np.ndarray:
        """float32 predictions, one per row of ``batch``."""
        users, items = _matrix(batch.column("u_features")), _matrix(batch.column("i_features"))
        if self.name == "embedding_net":
            return self._net().score_embeddings(users, items).numpy()
        raw = (users * items).sum(1)
        if self.name == "dot":
            return raw.numpy()
        bias = [torch.from_numpy(np.array(pc.fill_null(batch.column(c), 0.0).to_numpy(zero_copy_only=False),
                                          dtype=np.float32)) for c in ("u_bias", "i_bias")]
        return sigmoid_range(raw + bias[0] + bias[1], self.y_range).numpy()


def predict_pairs(spark: SparkSession, pairs: DataFrame, user_factors: DataFrame, item_factors: DataFrame,
                  scorer: PairScorer) -> DataFrame:
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
    shared = spark.sparkContext.broadcast(scorer)

    def run(batches):
        model = shared.value
        for batch in batches:
            known = pc.and_(batch.column("u_features").is_valid(), batch.column("i_features").is_valid())
            has = known.to_numpy(zero_copy_only=False)
            pred = np.zeros(batch.num_rows, np.float32)
            if has.any():
                pred[has] = model.predict(batch.filter(known))
            arrays = [batch.column(n) for n in names] + [pa.array(pred, pa.float32(), mask=~has)]
            yield pa.RecordBatch.from_arrays(arrays, names=names + ["prediction"])

    return joined.mapInArrow(run, schema)
