"""Factor tables: a model's user and item tables as Parquet for Spark, and the id maps.

``user_factors/`` and ``item_factors/`` are Parquet with ``id int32, idx int32,
bias float32, features array<float>`` (``id`` and ``features`` as in Spark ALS's
``userFactors``/``itemFactors``), sorted by ``idx``; ``bias`` is null for models
without biases.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cfmodel.errors import InputError

SIDES = {"user": "user_factors", "item": "item_factors"}


def read_id_map(path: str, id_col: str, idx_col: str) -> np.ndarray:
    """Original ids ordered by index, from the prepare job's ``users/`` or ``items/``."""
    table = pq.read_table(path, columns=[id_col, idx_col]).to_pandas().sort_values(idx_col)
    idx = table[idx_col].to_numpy()
    if not np.array_equal(idx, np.arange(len(idx))):
        raise InputError(f"{path}: {idx_col} is not contiguous from 0; is this a prepare job's output?")
    return table[id_col].to_numpy(dtype=np.int64)


def factor_table(ids: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]) -> pa.Table:
    """One side's table: ``id, idx, bias, features`` by index."""
    n, k = weight.shape
    if len(ids) != n:
        raise InputError(f"{len(ids)} ids for {n} embedding rows: the id map and the model disagree")
    features = pa.FixedSizeListArray.from_arrays(pa.array(weight.astype(np.float32).reshape(-1), pa.float32()), k)
    biases = (pa.array(bias.astype(np.float32).reshape(-1), pa.float32()) if bias is not None
              else pa.nulls(n, pa.float32()))
    return pa.table({
        "id": pa.array(ids.astype(np.int32)),
        "idx": pa.array(np.arange(n, dtype=np.int32)),
        "bias": biases,
        # A plain list (not fixed-size) reads in Spark as array<float>, like ALS's features.
        "features": features.cast(pa.list_(pa.float32())),
    })


def write_factor_table(table: pa.Table, out_dir: str, side: str, prefix: str = "") -> None:
    """Write ``<prefix>user_factors/`` or ``<prefix>item_factors/`` under a local ``out_dir``."""
    folder = os.path.join(out_dir, prefix + SIDES[side])
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, "part-00000.parquet"))
