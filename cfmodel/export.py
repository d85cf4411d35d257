"""Exporting a trained model: factor tables for Spark, and a self-describing ``model.pt``.

``user_factors/`` and ``item_factors/`` are Parquet with ``id int32, idx int32,
bias float32, features array<float>`` (``id`` and ``features`` as in Spark ALS's
``userFactors``/``itemFactors``), sorted by ``idx``. ``model.pt`` holds the state
dict, the model's constructor arguments and the id maps, and loads with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import io
import os
from typing import Any, Dict, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from cfmodel.models import build_model

MODEL_KEYS = ("name", "n_factors", "y_range", "hidden", "dropouts", "emb_dropout")


def read_id_map(path: str, id_col: str, idx_col: str) -> np.ndarray:
    """Original ids ordered by index, from the prepare job's ``users/`` or ``items/``."""
    table = pq.read_table(path, columns=[id_col, idx_col]).to_pandas().sort_values(idx_col)
    idx = table[idx_col].to_numpy()
    if not np.array_equal(idx, np.arange(len(idx))):
        raise ValueError(f"{path}: {idx_col} is not contiguous from 0")
    return table[id_col].to_numpy(dtype=np.int64)


def _factor_table(ids: np.ndarray, weight: torch.Tensor, bias: torch.Tensor | None) -> pa.Table:
    w = weight.detach().float().cpu().numpy()
    n, k = w.shape
    features = pa.FixedSizeListArray.from_arrays(pa.array(w.reshape(-1), pa.float32()), k)
    biases = (pa.array(bias.detach().float().cpu().numpy().reshape(-1), pa.float32()) if bias is not None
              else pa.nulls(n, pa.float32()))
    return pa.table({
        "id": pa.array(ids.astype(np.int32)),
        "idx": pa.array(np.arange(n, dtype=np.int32)),
        "bias": biases,
        # A plain list (not fixed-size) reads in Spark as array<float>, like ALS's features.
        "features": features.cast(pa.list_(pa.float32())),
    })


def export_factors(model: nn.Module, user_ids: np.ndarray, item_ids: np.ndarray, out_dir: str) -> None:
    """Write ``user_factors/`` and ``item_factors/`` Parquet under a local ``out_dir``."""
    for side, ids in (("u", user_ids), ("i", item_ids)):
        weight = getattr(model, f"{side}_weight").weight
        if len(ids) != weight.shape[0]:
            raise ValueError(f"{len(ids)} ids for {weight.shape[0]} embedding rows")
        bias = getattr(model, f"{side}_bias").weight if hasattr(model, f"{side}_bias") else None
        folder = os.path.join(out_dir, "user_factors" if side == "u" else "item_factors")
        os.makedirs(folder, exist_ok=True)
        pq.write_table(_factor_table(ids, weight, bias), os.path.join(folder, "part-00000.parquet"))


def model_payload(model: nn.Module, model_args: Dict[str, Any], user_ids: np.ndarray, item_ids: np.ndarray,
                  extra: Dict[str, Any]) -> Dict[str, Any]:
    """Everything needed to rebuild and use the model, as weights-only-safe types."""
    return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model": {k: model_args[k] for k in MODEL_KEYS},
            "user_ids": torch.from_numpy(user_ids.astype(np.int64)),
            "item_ids": torch.from_numpy(item_ids.astype(np.int64)), **extra}


def load_model(path: Union[str, bytes], device: str = "cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild a model from ``model.pt`` (a local path, or its bytes); returns (module in eval mode, payload)."""
    payload = torch.load(io.BytesIO(path) if isinstance(path, bytes) else path, map_location=device,
                         weights_only=True)
    args = payload["model"]
    model = build_model(args["name"], len(payload["user_ids"]), len(payload["item_ids"]), args["n_factors"],
                        tuple(args["y_range"]), args["hidden"], args["dropouts"], args["emb_dropout"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload
