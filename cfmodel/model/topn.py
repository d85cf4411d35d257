"""Top-N selection for one block of users against all items (no Spark here).

For a bilinear model (:class:`cfmodel.model.nets.CFModule`) scores are one
matrix product per block (``users × items``), the item bias folded in as one
more factor; the N chosen get the user bias and the model's ``output``
transform, so they are the model's scores. Other models score the block
through their ``score_block``. Excluded items (already
rated, filtered out) are masked to ``-inf`` and never returned. Users arrive
as Arrow record batches (what Spark's ``mapInArrow`` hands over). Selection
reads each score once (group maxima) and ranks only the best groups with
``torch.topk``; ties are broken towards the lower item index, so the result is
the same on every run and every partitioning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from cfmodel.model.factors import ID_ARROW_TYPES, id_type_of
from cfmodel.model.nets import CFModule


@dataclass
class ItemTable:
    """What every scoring task holds (broadcast): item factors, biases and candidates."""

    ids: np.ndarray                 # by item index, in the ids' type (int32, int64 or object: id_type_of)
    factors: np.ndarray             # float32 (n_items, n_factors)
    bias: np.ndarray                # float32 (n_items,), zeros for models without biases
    candidate: np.ndarray           # bool (n_items,): False for globally excluded items


def mask_excluded(scores: torch.Tensor, rows: np.ndarray, cols: np.ndarray,
                  candidate: Optional[torch.Tensor] = None) -> None:
    """Set in place to -inf: the (row, item) pairs given, and non-candidate items for all rows."""
    if candidate is not None and not bool(candidate.all()):
        scores[:, ~candidate] = -torch.inf
    if len(rows):
        scores[torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(cols.astype(np.int64))] = -torch.inf


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
    return _order(idx.numpy(), vals.numpy())


def group_width(n_items: int, n: int) -> int:
    """Items per group for :func:`top_n_grouped`: about sqrt(n_items / (4 (n + 1))), a multiple of 8.

    Wider groups mean fewer group maxima to rank but more candidates to gather;
    measured at 27k items, top-10, widths 16 to 32 were equally fast and both
    ends slower (48: +14%, 96: +26%).
    """
    return max(8, int(round((n_items / (4 * (n + 1))) ** 0.5 / 8)) * 8)


def _order(idx: np.ndarray, vals: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Each row by score descending, then item index ascending; ``-inf`` entries get index -1."""
    order = np.lexsort((idx, -vals.astype(np.float64)), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    idx[~np.isfinite(vals)] = -1
    return idx, vals


def top_n_grouped(scores: torch.Tensor, n: int, group: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`top_n` with the same result, reading most scores once instead of sorting them.

    The ``cols`` columns form ``cols / group`` groups of ``group`` items each,
    strided: group ``j`` holds columns ``j, j + G, j + 2G, ...`` (``G`` groups), so
    the group maxima are one vectorised ``amax`` down the rows of a
    ``(group, G)`` view. ``cols`` must be a multiple of ``group`` (pad with
    ``-inf``). Every one of a row's top ``n`` lies in one of the ``n`` groups
    with the largest maxima: an item outside them is beaten by ``n`` group
    maxima. So the group maxima, a top-k over them and a top-k over those
    groups' items replace a top-k over the whole row. Rows where a tie makes
    the choice ambiguous (the ``n``-th and ``n+1``-th group maxima equal, or the
    ``n``-th and ``n+1``-th candidates; ``-inf`` included) are redone by
    :func:`top_n` over the whole row, so the lower-index tie rule stays exact
    without keeping the candidates in column order.
    """
    rows, cols = scores.shape
    k = min(n, cols)
    n_groups = cols // group if group else 0
    if not rows or cols % max(group, 1) or n_groups <= 2 * (k + 1):
        return top_n(scores, n)
    group_max = scores.view(rows, group, n_groups).amax(dim=1)
    group_vals, groups = torch.topk(group_max, k + 1, dim=1)
    cand_cols = (groups[:, :k, None] + n_groups * torch.arange(group)).view(rows, k * group)
    vals, pos = torch.topk(torch.gather(scores, 1, cand_cols), k + 1, dim=1)
    redo = ((group_vals[:, k] == group_vals[:, k - 1]) | (vals[:, k] == vals[:, k - 1])).nonzero().flatten()
    idx, vals_np = _order(torch.gather(cand_cols, 1, pos[:, :k]).numpy(), vals[:, :k].numpy())
    if len(redo):
        idx[redo.numpy()], vals_np[redo.numpy()] = top_n(scores[redo], n)
    return idx, vals_np


def input_schema(user_type: pa.DataType = pa.int32()) -> pa.Schema:
    """What :meth:`BlockScorer.score_batch` reads: ``user_id`` (of the ids' type), factors, bias, seen."""
    return pa.schema([("user_id", user_type), ("features", pa.list_(pa.float32())),
                      ("bias", pa.float32()), ("seen", pa.list_(pa.int32()))])


def output_schema(user_type: pa.DataType = pa.int32(), item_type: pa.DataType = pa.int32()) -> pa.Schema:
    """What it returns: ``user_id, rank, item_id, score, fallback``, the ids in their own types."""
    return pa.schema([pa.field("user_id", user_type, False), pa.field("rank", pa.int32(), False),
                      pa.field("item_id", item_type, False), pa.field("score", pa.float32(), False),
                      pa.field("fallback", pa.bool_(), False)])


INPUT_SCHEMA, OUTPUT_SCHEMA = input_schema(), output_schema()  # MovieLens' int32 ids


def _lists(column: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    """(row of each value, values) of a list column; null lists count as empty."""
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return np.repeat(np.arange(len(column)), lengths), values


@dataclass
class BlockScorer:
    """Scores batches of users; picklable, so Spark can broadcast it.

    Users arrive as ``user_id, features (list or null), bias, seen (item indices
    or null)``. Users with factors get their top ``top_n`` by the model's score
    (``head``: the model without its tables, see ``ModelArgs.head_only``);
    users without (cold start) get the precomputed fallback ranking minus what
    they have seen, flagged ``fallback``.
    """

    items: ItemTable
    fallback_idx: np.ndarray      # candidate item indices, best first
    fallback_score: np.ndarray    # float32 (n_items,): the score reported for a fallback item
    top_n: int
    head: CFModule
    block_size: int = 2048
    threads: int = 1
    _padded: Optional[tuple] = field(default=None, repr=False, compare=False)  # built per process, lazily
    _buffer: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)  # reused scores block

    def __getstate__(self) -> dict:
        # The per-process caches are rebuilt where the scorer runs; never ship them in a broadcast.
        return {**self.__dict__, "_padded": None, "_buffer": None}

    def _padded_items(self):
        """(items, candidate, group): the items padded to whole groups for :func:`top_n_grouped`.

        ``items`` is ``(n_padded, n_factors + 1)``: the factors, then an offset
        column holding the item bias, ``-inf`` for non-candidates and for the
        zero-factor padding. Users get a matching column of ones, so one matrix
        product yields ``u·i + b_i`` with every excluded item already at
        ``-inf``: no pass over the scores for biases or the candidate mask
        (measured at 256 × 27k, rank 32: a third less time than ``addmm`` with
        the bias as a separate term).
        """
        if self._padded is None:
            n_items, n_factors = self.items.factors.shape
            group = group_width(n_items, self.top_n)
            n_padded = n_items + (-n_items % group)
            items = np.zeros((n_padded, n_factors + 1), np.float32)
            items[:n_items, :n_factors] = self.items.factors
            items[:, n_factors] = -np.inf
            items[:n_items, n_factors] = np.where(self.items.candidate, self.items.bias, -np.inf)
            candidate = np.zeros(n_padded, bool)
            candidate[:n_items] = self.items.candidate
            self._padded = (torch.from_numpy(items), torch.from_numpy(candidate), group)
        return self._padded

    def _dot_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        # A reused buffer saves the page faults of a fresh large allocation per block
        # (measured: half the product's time at 256 × 27k).
        if self._buffer is None or self._buffer.shape[0] < len(users):
            self._buffer = torch.empty(max(self.block_size, len(users)), items.shape[0])
        return torch.mm(users, items.T, out=self._buffer[:len(users)])

    def score_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """One Arrow batch of users (``INPUT_SCHEMA``) in, their recommendations (``OUTPUT_SCHEMA``) out, on
        ``threads`` torch threads; the process's own thread count is back when it returns."""
        # Restored, not left set: in a caller's process (a notebook asking TrainedModel.recommend, a served
        # MLflow model) a lasting set_num_threads(1) would make all its later torch work single-threaded.
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._score_batch(batch)
        finally:
            torch.set_num_threads(before)

    @torch.no_grad()
    def _score_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n_factors = self.items.factors.shape[1]
        user_ids = batch.column("user_id").to_numpy(zero_copy_only=False)
        features = batch.column("features")
        warm = features.is_valid().to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(features).to_numpy(zero_copy_only=False)
        if flat.size != warm.sum() * n_factors:
            raise ValueError(f"user features must hold {n_factors} values each (the item factors' size)")
        # One copy out of Arrow's read-only buffers, with the column of ones that meets the items' offsets.
        users = np.ones((len(flat) // n_factors, n_factors + 1), np.float32)
        users[:, :n_factors] = flat.reshape(-1, n_factors)
        factors = torch.from_numpy(users)
        bias = np.asarray(pc.fill_null(batch.column("bias"), 0.0).to_numpy(zero_copy_only=False), np.float32)
        seen_rows, seen_cols = _lists(batch.column("seen"))
        items, candidate, group = self._padded_items()
        head = self.head.eval()

        parts: List[tuple] = []
        warm_rows = np.nonzero(warm)[0]
        block_of_row = np.full(len(user_ids), -1)
        for start in range(0, len(warm_rows), self.block_size):
            rows = warm_rows[start:start + self.block_size]
            block = factors[start:start + len(rows)]
            if head.bilinear:
                scores = self._dot_scores(block, items)
            else:
                scores = head.score_block(block[:, :n_factors], items[:, :n_factors])
            block_of_row[:] = -1
            block_of_row[rows] = np.arange(len(rows))
            hit = block_of_row[seen_rows] >= 0
            mask_excluded(scores, block_of_row[seen_rows[hit]], seen_cols[hit], None if head.bilinear else candidate)
            idx, vals = top_n_grouped(scores, self.top_n, group)
            if head.bilinear:
                # The user bias shifts a whole row, so it cannot change the row's order: added to the N chosen only.
                vals = head.output(torch.from_numpy(vals + bias[rows, None])).numpy()
            parts.append(self._long(user_ids[rows], idx, vals, False))
        for row in np.nonzero(~warm)[0]:
            keep = self.fallback_idx
            seen = seen_cols[seen_rows == row]
            if len(seen):
                keep = keep[~np.isin(keep, seen)]
            chosen = keep[: self.top_n][None, :]
            parts.append(self._long(user_ids[row:row + 1], chosen, self.fallback_score[chosen], True))
        schema = output_schema(batch.schema.field("user_id").type, ID_ARROW_TYPES[id_type_of(self.items.ids)])
        columns = [np.concatenate([p[c] for p in parts]) if parts else np.empty(0, object) for c in range(5)]
        return pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)

    def _long(self, user_ids: np.ndarray, idx: np.ndarray, vals: np.ndarray, fallback: bool) -> tuple:
        rows, cols = np.nonzero(idx >= 0)
        return (user_ids[rows], (cols + 1).astype(np.int32),
                self.items.ids[idx[rows, cols]], vals[rows, cols].astype(np.float32),
                np.full(len(rows), fallback))

    def score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The same for a pandas frame of users (lists as numpy arrays or None)."""
        schema = input_schema(ID_ARROW_TYPES[id_type_of(frame["user_id"].to_numpy())])
        batch = pa.RecordBatch.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        return self.score_batch(batch).to_pandas()
