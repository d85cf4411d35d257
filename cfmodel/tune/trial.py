"""One trial of a search, as a Spark task runs it: train in the task's process, measure, report."""
from __future__ import annotations

import dataclasses
import math
import os
import socket
import tempfile
import time
from typing import Any, Dict, Optional, Set

import numpy as np
import pyarrow.parquet as pq
import torch
from pyarrow import fs

from cfmodel.config.train import DistributedConfig, TrainConfig
from cfmodel.model import TrainedModel
from cfmodel.tune.search import ndcg_at_k
from cfmodel.urls import to_url


def trial_config(base: TrainConfig, params: Dict[str, Any], epochs: Optional[int], output: str) -> TrainConfig:
    """The train config of one trial: ``base`` with ``params`` and ``epochs``, trained in one process."""
    return dataclasses.replace(base, **{**params, "epochs": epochs}, output=output, progress=False,
                               distributed=DistributedConfig(), tuned=None, early_stopping=0)


def run_trial(base: TrainConfig, metric: str, k: int, threshold: Optional[float], task: tuple) -> Dict[str, Any]:
    """Train trial ``task = (trial id, rung, params, epochs)`` and measure ``metric`` on the validation split.

    A trial whose loss diverges scores NaN (status ``diverged``) rather than failing the search.
    """
    from cfmodel.train.fit import fit_and_publish
    from cfmodel.train.trainer import TrainingDivergedError

    trial, rung, params, epochs = task
    started = time.time()
    torch.set_num_threads(1)  # one core per task: the executor runs as many trials side by side as it has cores
    status, value, rmse = "ok", math.nan, math.nan
    with tempfile.TemporaryDirectory(prefix="cf-tune-") as tmp:
        cfg = trial_config(base, params, epochs, os.path.join(tmp, "model"))
        try:
            result = fit_and_publish(cfg, resume=False)
            rmse = result["valid_rmse"] if result["valid_rmse"] is not None else math.nan
            value = rmse if metric == "valid_rmse" else validation_ndcg(TrainedModel.load(cfg.output), cfg.data,
                                                                         k, threshold)
        except TrainingDivergedError:
            status = "diverged"
    return {"trial": trial, "rung": rung, "params": params, "epochs": epochs, "metric": metric, "value": value,
            "valid_rmse": rmse, "status": status, "started": started, "ended": time.time(),
            "seconds": round(time.time() - started, 3), "host": socket.gethostname(), "pid": os.getpid()}


def _read(data: str, split: str, columns) -> Dict[str, np.ndarray]:
    filesystem, inner = fs.FileSystem.from_uri(to_url(f"{data.rstrip('/')}/{split}"))
    table = pq.read_table(inner, columns=columns, filesystem=filesystem)
    return {c: table.column(c).to_numpy() for c in columns}


def validation_ndcg(model: TrainedModel, data: str, k: int, threshold: Optional[float]) -> float:
    """NDCG@k of the model's top-k lists (training items excluded) against each user's validation items
    rated at or above ``threshold`` (None: all of them)."""
    valid = _read(data, "valid", ["user_idx", "item_idx", "rating"])
    train = _read(data, "train", ["user_idx", "item_idx"])
    keep = valid["rating"] >= (-np.inf if threshold is None else threshold)
    relevant: Dict[int, Set[int]] = {}
    for u, i in zip(valid["user_idx"][keep], valid["item_idx"][keep]):
        relevant.setdefault(int(u), set()).add(int(i))
    seen: Dict[int, list] = {}
    for u, i in zip(train["user_idx"], train["item_idx"]):
        seen.setdefault(int(u), []).append(int(i))
    users = sorted(relevant)
    lists = model.recommend(users, k, exclude={u: seen.get(u, []) for u in users}).sort_values(["user_id", "rank"])
    item_idx = {int(item): idx for idx, item in enumerate(model.item_ids)}
    user_idx = {int(user): idx for idx, user in enumerate(model.user_ids)}
    got: Dict[int, list] = {}
    for user, item in zip(lists["user_id"], lists["item_id"]):
        got.setdefault(user_idx[int(user)], []).append(item_idx[int(item)])
    return ndcg_at_k(got, relevant, k)
