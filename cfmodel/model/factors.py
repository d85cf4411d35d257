"""Factor tables: a model's user and item tables as Parquet for Spark, and the id maps.

``user_factors/`` and ``item_factors/`` are Parquet with ``id, idx int32,
bias float32, features array<float>`` (``id`` and ``features`` as in Spark ALS's
``userFactors``/``itemFactors``), sorted by ``idx``; ``bias`` is null for models
without biases. ``id`` has the input's id type: ``int32`` for MovieLens-style
ids, ``int64`` for other integers, ``string`` for text ids; in numpy, an id array's
dtype says which (int32, int64, object).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch
import pyarrow.parquet as pq

from cfmodel.errors import InputError

SIDES = {"user": "user_factors", "item": "item_factors"}
ID_ARROW_TYPES = {"int": pa.int32(), "long": pa.int64(), "string": pa.string()}
_NUMPY_TYPES = {"int": np.int32, "long": np.int64, "string": object}


def id_type_of(ids: np.ndarray) -> str:
    """``int``, ``long`` or ``string``: the id type an id array holds, by its dtype."""
    if ids.dtype == object:
        return "string"
    return "int" if ids.dtype == np.int32 else "long"


def id_array(values: Any, id_type: str) -> np.ndarray:
    """``values`` as an id array of ``id_type`` (see :func:`id_type_of`)."""
    return np.asarray(values, dtype=_NUMPY_TYPES[id_type])


def ids_payload(ids: np.ndarray) -> Any:
    """An id array as ``torch.load(weights_only=True)`` reads it back: a tensor of integer ids (int64, as
    files have always held them), a list of text ids."""
    return list(map(str, ids)) if id_type_of(ids) == "string" else torch.from_numpy(ids.astype(np.int64))


def ids_from(value: Any, id_type: str) -> np.ndarray:
    """The id array back from :func:`ids_payload`'s form, as ``id_type``."""
    return id_array(value.numpy() if isinstance(value, torch.Tensor) else value, id_type)


def read_id_map(path: str, id_col: str, idx_col: str) -> np.ndarray:
    """Original ids ordered by index, from the prepare job's ``users/`` or ``items/``, in their own type."""
    table = pq.read_table(path, columns=[id_col, idx_col])
    kind = {pa.int32(): "int", pa.int64(): "long", pa.string(): "string"}.get(table.schema.field(id_col).type)
    if kind is None:
        raise InputError(f"{path}: {id_col} is {table.schema.field(id_col).type}, not an id type of a prepare output")
    frame = table.to_pandas().sort_values(idx_col)
    idx = frame[idx_col].to_numpy()
    if not np.array_equal(idx, np.arange(len(idx))):
        raise InputError(f"{path}: {idx_col} is not contiguous from 0; is this a prepare job's output?")
    return id_array(frame[id_col].to_numpy(), kind)


def factor_table(ids: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray]) -> pa.Table:
    """One side's table: ``id, idx, bias, features`` by index."""
    n, k = weight.shape
    if len(ids) != n:
        raise InputError(f"{len(ids)} ids for {n} embedding rows: the id map and the model disagree")
    features = pa.FixedSizeListArray.from_arrays(pa.array(weight.astype(np.float32).reshape(-1), pa.float32()), k)
    biases = (pa.array(bias.astype(np.float32).reshape(-1), pa.float32()) if bias is not None
              else pa.nulls(n, pa.float32()))
    return pa.table({
        "id": pa.array(ids, type=ID_ARROW_TYPES[id_type_of(ids)]),
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
