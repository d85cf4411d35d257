"""Top-N selection for one block of users against all items (no Spark here).

Scores are one matrix product per block (``users × items``) plus biases; the
N chosen are put through the model's output transform, so they are predicted
ratings. Excluded
items (already rated, filtered out) are masked to ``-inf`` and never returned.
Selection uses ``torch.topk``; ties are broken towards the lower item index, so
the result is the same on every run and every partitioning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from cfmodel.models import sigmoid_range


@dataclass
class ItemTable:
    """What every scoring task holds (broadcast): item factors, biases and candidates."""

    ids: np.ndarray                 # int64, by item index
    factors: np.ndarray             # float32 (n_items, n_factors)
    bias: np.ndarray                # float32 (n_items,), zeros for models without biases
    candidate: np.ndarray           # bool (n_items,): False for globally excluded items
    y_range: Optional[Tuple[float, float]]  # None: raw dot product (the ``dot`` model)

    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.factors.nbytes + self.bias.nbytes + self.candidate.nbytes)


def raw_scores(user_factors: torch.Tensor, user_bias: torch.Tensor, item_factors: torch.Tensor,
               item_bias: torch.Tensor) -> torch.Tensor:
    """(block, n_items) ``u·i + b_u + b_i``: one matrix product, biases added in place.

    The output transform (sigmoid range) is monotonic, so top-N is chosen on
    these raw scores and only the N winners are transformed.
    """
    scores = torch.addmm(item_bias[None, :], user_factors, item_factors.T)
    return scores.add_(user_bias[:, None])


def mask_excluded(scores: torch.Tensor, seen: Sequence[Optional[np.ndarray]], candidate: torch.Tensor) -> None:
    """Set in place to -inf: non-candidate items for all rows, and each row's seen items."""
    if not bool(candidate.all()):
        scores[:, ~candidate] = -torch.inf
    rows = [np.full(len(s), r, dtype=np.int64) for r, s in enumerate(seen) if s is not None and len(s)]
    if rows:
        cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen if s is not None and len(s)])
        scores[torch.from_numpy(np.concatenate(rows)), torch.from_numpy(cols)] = -torch.inf


def top_n(scores: torch.Tensor, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """(indices, values), each (rows, n'), best first; ties go to the lower index.

    ``n'`` is ``min(n, n_items)``; entries that were ``-inf`` (excluded) come back
    with index -1 and must be dropped by the caller.
    """
    k = min(n, scores.shape[1])
    # One extra: where the (k+1)-th equals the k-th, torch.topk chose arbitrarily among tied
    # items, so those rows (rare with real scores) are redone exactly.
    vals, idx = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    tied_rows = (vals[:, k] == vals[:, k - 1]).nonzero().flatten() if vals.shape[1] > k else []
    vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    for r in (tied_rows.tolist() if len(tied_rows) else []):
        row, t = scores[r], vals[r, k - 1]
        above = (row > t).nonzero().flatten()
        equal = (row == t).nonzero().flatten()[: k - len(above)]  # nonzero() is in index order
        chosen = torch.cat([above, equal])
        idx[r], vals[r] = chosen, row[chosen]
    vals_np, idx_np = vals.numpy(), idx.numpy()
    # Final order: score descending, then item index ascending.
    order = np.lexsort((idx_np, -vals_np.astype(np.float64)), axis=1)
    idx_np = np.take_along_axis(idx_np, order, axis=1)
    vals_np = np.take_along_axis(vals_np, order, axis=1)
    idx_np[~np.isfinite(vals_np)] = -1
    return idx_np, vals_np


OUTPUT_COLUMNS = ["user_id", "rank", "item_id", "score", "fallback"]


@dataclass
class BlockScorer:
    """Scores pandas frames of users; picklable, so Spark can broadcast it.

    Users arrive as ``user_id, features (array or None), bias, seen (item
    indices or None)``. Users with factors get their top ``top_n`` by predicted
    rating; users without (cold start) get the precomputed fallback ranking
    minus what they have seen, flagged ``fallback``.
    """

    items: ItemTable
    fallback_idx: np.ndarray      # candidate item indices, best first
    fallback_score: np.ndarray    # float32 (n_items,): the score reported for a fallback item
    top_n: int
    block_size: int = 2048
    threads: int = 1
    net: Optional[dict] = None    # embedding_net: {"args": ..., "state": {name: ndarray}}
    net_pairs: int = 1 << 20      # user × item pairs per forward pass of the net

    def _net_model(self):
        from cfmodel.models import build_model

        args = self.net["args"]
        model = build_model("embedding_net", 1, 1, args["n_factors"], tuple(args["y_range"]), args["hidden"],
                            args["dropouts"], args["emb_dropout"])
        state = {k: torch.from_numpy(v) for k, v in self.net["state"].items()}
        model.layers.load_state_dict(state)
        return model.eval()

    def _scores(self, users: np.ndarray, bias: np.ndarray, item_factors: torch.Tensor,
                item_bias: torch.Tensor, model) -> torch.Tensor:
        u = torch.from_numpy(users)
        if model is None:
            return raw_scores(u, torch.from_numpy(bias), item_factors, item_bias)
        # The net has no dot product: run it over every (user, item) pair, a few users at a time.
        n_items = item_factors.shape[0]
        per = max(1, self.net_pairs // n_items)
        out = torch.empty(len(users), n_items)
        for s in range(0, len(users), per):
            block = u[s:s + per]
            pairs_u = block.repeat_interleave(n_items, dim=0)
            pairs_i = item_factors.repeat(len(block), 1)
            out[s:s + per] = model.score_embeddings(pairs_u, pairs_i).view(len(block), n_items)
        return out

    @torch.no_grad()
    def score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One pandas frame of users in, their recommendations (long form) out."""
        torch.set_num_threads(self.threads)
        item_factors = torch.from_numpy(self.items.factors)
        item_bias = torch.from_numpy(self.items.bias)
        candidate = torch.from_numpy(self.items.candidate)
        model = self._net_model() if self.net is not None else None
        parts = []
        warm = frame[frame["features"].notna()]
        for start in range(0, len(warm), self.block_size):
            block = warm.iloc[start:start + self.block_size]
            users = np.stack(block["features"].to_numpy()).astype(np.float32)
            bias = block["bias"].fillna(0.0).to_numpy(dtype=np.float32)
            scores = self._scores(users, bias, item_factors, item_bias, model)
            mask_excluded(scores, list(block["seen"]), candidate)
            idx, vals = top_n(scores, self.top_n)
            if model is None and self.items.y_range is not None:
                vals = sigmoid_range(torch.from_numpy(vals), self.items.y_range).numpy()
            parts.append(_long_form(block["user_id"].to_numpy(), idx, vals, self.items.ids, False))
        cold = frame[frame["features"].isna()]
        for user_id, seen in zip(cold["user_id"].to_numpy(), cold["seen"]):
            keep = self.fallback_idx
            if seen is not None and len(seen):
                keep = keep[~np.isin(keep, seen)]
            chosen = keep[: self.top_n]
            scores = self.fallback_score[chosen]
            parts.append(_long_form(np.array([user_id]), chosen[None, :], scores[None, :], self.items.ids, True))
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(OUTPUT_COLUMNS, ("int32", "int32", "int32", "float32", "bool"))})
        return pd.concat(parts, ignore_index=True)


def _long_form(user_ids: np.ndarray, idx: np.ndarray, vals: np.ndarray, item_ids: np.ndarray,
               fallback: bool) -> pd.DataFrame:
    rows, cols = np.nonzero(idx >= 0)
    return pd.DataFrame({
        "user_id": user_ids[rows].astype(np.int32),
        "rank": (cols + 1).astype(np.int32),
        "item_id": item_ids[idx[rows, cols]].astype(np.int32),
        "score": vals[rows, cols].astype(np.float32),
        "fallback": np.full(len(rows), fallback),
    })
