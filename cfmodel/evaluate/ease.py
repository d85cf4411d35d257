"""EASE (Steck 2019): the strong simple top-N reference, fitted and ranked on the driver.

On the 0/1 matrix ``X`` of training ratings, ``P = (XᵀX + λI)⁻¹`` and
``B = -P / diag(P)`` with a zero diagonal; a user's scores are ``X_u B``. The
solve is items × items, so it runs only up to ``evaluate.ease_max_items``
items (9,066 on MovieLens small: a 330 MB matrix in float32, inverted in
seconds); above that the baseline is skipped with a logged reason. Lists are
made for the evaluated users only, in blocks, excluding their training items.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession

from cfmodel.lists import output_schema

LOG = logging.getLogger(__name__)
# Above this many items the solve runs in float32 (memory); below it in float64 (accuracy).
FLOAT64_MAX_ITEMS = 10_000
USER_BLOCK = 4096


def ease_weights(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, lam: float) -> torch.Tensor:
    """The item × item weights ``B`` from training pairs (indices)."""
    dtype = torch.float64 if n_items <= FLOAT64_MAX_ITEMS else torch.float32
    order = np.argsort(users, kind="stable")
    users, items = torch.as_tensor(users[order], dtype=torch.long), torch.as_tensor(items[order], dtype=torch.long)
    gram = torch.zeros(n_items, n_items, dtype=dtype)
    # XᵀX block by block of users, so memory stays the gram matrix plus one block.
    bounds = torch.searchsorted(users, torch.arange(0, n_users + USER_BLOCK, USER_BLOCK))
    for b, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist())):
        if lo == hi:
            continue
        x = torch.zeros(USER_BLOCK, n_items, dtype=dtype)
        x[users[lo:hi] - b * USER_BLOCK, items[lo:hi]] = 1.0  # 0/1: a repeated pair counts once
        gram += x.T @ x
    gram.diagonal().add_(lam)
    p = torch.linalg.inv(gram)
    b = -p / p.diagonal()[None, :]
    b.diagonal().zero_()
    return b


def ease_lists(spark: SparkSession, train: DataFrame, eval_users: DataFrame, users: DataFrame, items: DataFrame,
               k: int, lam: float, max_items: int, block: int = 1024) -> Optional[DataFrame]:
    """Long-form top-``k`` EASE lists (:func:`cfmodel.lists.output_schema`) for ``eval_users``, or None when over ``max_items``."""
    n_items, n_users = items.count(), users.count()
    if n_items > max_items:
        LOG.warning("EASE skipped: %d items is over evaluate.ease_max_items=%d (an items x items solve)",
                    n_items, max_items)
        return None
    pairs = train.select("user_idx", "item_idx").toPandas()
    weights = ease_weights(pairs["user_idx"].to_numpy(), pairs["item_idx"].to_numpy(), n_users, n_items, lam)
    item_ids = items.orderBy("item_idx").select("item_id").toPandas()["item_id"].to_numpy()
    wanted = eval_users.join(users.select("user_id", "user_idx"), "user_id").toPandas()
    rated = pairs.groupby("user_idx")["item_idx"].apply(np.asarray)
    parts = []
    for start in range(0, len(wanted), block):
        chunk = wanted.iloc[start:start + block]
        x = torch.zeros(len(chunk), n_items, dtype=weights.dtype)
        for row, u in enumerate(chunk["user_idx"]):
            x[row, rated.get(u, np.empty(0, np.int64))] = 1.0
        scores = x @ weights
        scores[x > 0] = -torch.inf  # never a training item
        vals, idx = torch.topk(scores, min(k, n_items), dim=1)
        ranks = np.tile(np.arange(1, idx.shape[1] + 1), len(chunk))
        parts.append(pd.DataFrame({"user_id": np.repeat(chunk["user_id"].to_numpy(), idx.shape[1]),
                                   "rank": ranks, "item_id": item_ids[idx.numpy().reshape(-1)],
                                   "score": vals.numpy().reshape(-1).astype(np.float32), "fallback": False}))
    schema = output_schema(users.schema["user_id"].dataType, items.schema["item_id"].dataType)
    frame = pd.concat(parts) if parts else pd.DataFrame(columns=schema.names)
    frame = frame[np.isfinite(frame["score"].astype(np.float32))].astype({"rank": "int32"})
    return spark.createDataFrame(frame, schema)
