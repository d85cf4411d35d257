"""Checks that the processes of a data-parallel run stay one run.

Data parallelism is only correct while every rank holds the same weights and
optimiser state after each step (``DistributedDataParallel`` averages the
gradients; each rank then applies the same update), reads its own shard, and
continues a resumed run from the same checkpoint. A bug in any of these does
not crash: it trains a worse model. So at the end of every epoch, and right
after a resume, each rank hands the others a digest of its weights and
optimiser state, its epoch and step, and the rows of its shard it read once
(their count and a sum of their (user, item) keys); a rank that disagrees
stops the run with :class:`RanksDisagreeError`. Rank 0 keeps the records,
which the train stage writes to ``meta.json`` (``rank_checks``).

The cost is one all-gather of a few numbers per epoch and a pass over the
weights, which a one-process run skips.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from cfmodel.errors import CfError
from cfmodel.train.ranks import Ranks

# Ranks apply identical updates to identical weights, so their digests agree to rounding of the sums.
TOLERANCE = 1e-9
# A (user, item) pair's key in the shard digest is user * stride + item; the digest is the keys' sum modulo
# 2**48 (int64 sums wrap modulo 2**64, which 2**48 divides; float64 carries 48 bits exactly).
ITEM_KEY_STRIDE = 1 << 32
KEY_MODULUS = 1 << 48


class RanksDisagreeError(CfError):
    """The processes of a data-parallel run no longer hold the same state (a bug, not bad input)."""

    exit_code = 1


def _digest(tensors) -> float:
    """Sum and sum of squares of every element (float64): equal tensors give equal digests."""
    total = 0.0
    for t in tensors:
        if torch.is_tensor(t) and t.is_floating_point():
            d = t.detach().to(torch.float64)
            if d.is_sparse:
                d = d.coalesce().values()
            total += float(d.sum()) + float((d * d).sum())
    return total


def optimizer_tensors(opt: torch.optim.Optimizer):
    """Every floating-point tensor of the optimiser's state (moments, decay ledgers)."""
    for state in opt.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                yield value


class RankChecks:
    """The agreement checks of one rank; a no-op for a one-process run."""

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks
        self.records: List[Dict[str, Any]] = []
        self._rows = 0
        self._keys = 0

    @property
    def active(self) -> bool:
        return self.ranks.world > 1

    def read(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Count a batch of this rank's first pass over its shard."""
        if self.active:
            self._rows += len(users)
            self._keys = (self._keys + int((users.long() * ITEM_KEY_STRIDE + items.long()).sum())) % KEY_MODULUS

    def check(self, after: str, epoch: int, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        """Gather every rank's figures ``after`` an epoch or a resume; raise when the ranks disagree."""
        if not self.active:
            return
        mine = [epoch, step, _digest(model.parameters()), _digest(optimizer_tensors(opt)), self._rows, self._keys]
        self._rows = self._keys = 0
        got = self.ranks.gather(mine)
        record = {"after": after, "epoch": [int(g[0]) for g in got], "step": [int(g[1]) for g in got],
                  "weights": [g[2] for g in got], "optimizer": [g[3] for g in got],
                  "rows": [int(g[4]) for g in got], "row_keys": [int(g[5]) for g in got]}
        self.records.append(record)
        problems = [name for name in ("epoch", "step") if len(set(record[name])) > 1]
        problems += [name for name in ("weights", "optimizer") if _spread(record[name]) > TOLERANCE]
        if problems:
            raise RanksDisagreeError(f"data-parallel training: the {self.ranks.world} processes hold different "
                                     f"{' and '.join(problems)} after {after} (epochs {record['epoch']}): "
                                     "they would no longer train one model")


def _spread(values: List[float]) -> float:
    """The values' range relative to their size."""
    return (max(values) - min(values)) / max(1.0, max(abs(v) for v in values))
