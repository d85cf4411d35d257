"""Validation figures of an epoch: the objective's loss and the squared error over the validation split.

Sums, not means, so the shards of a data-parallel run add up to the whole split's figures
(:func:`validate` adds them over the ranks).
"""
from __future__ import annotations

import math
from typing import Any, Tuple

import torch
from torch import nn

from cfmodel.train.objectives import Rating
from cfmodel.train.ranks import SINGLE, Ranks


@torch.no_grad()
def validation_mse(model: nn.Module, loader: Any, device: torch.device) -> float:
    """Mean squared error over a loader's whole epoch 0 (no shuffling needed)."""
    _, _, sq, n = validation_sums(model, Rating(), loader, device)
    return sq / max(n, 1)


# Seeds the negatives drawn for validation: the same every epoch, so epochs compare.
VALIDATION_SEED = 987_654_321
# Rows (of each process's shard) on which a ranking term's validation loss is estimated. The term costs a
# (rows, drawn items) block a row, and the split's files are in a seeded random order, so its first rows
# are a random sample; a quarter million rows estimate the mean loss to about 0.1%, at a fraction of the whole
# split's cost on large data. The squared error is always summed over every row.
VALIDATION_RANKING_ROWS = 262_144


@torch.no_grad()
def validation_sums(model: nn.Module, objective: Any, loader: Any, device: torch.device,
                    seed: int = VALIDATION_SEED, ranking_rows: int = VALIDATION_RANKING_ROWS
                    ) -> Tuple[float, int, float, int]:
    """(the objective's summed loss, the rows it was summed over, summed squared error or NaN, rows) over a
    loader's epoch 0: sums, so the shards of a data-parallel run add up to the whole split's figures. A ranking
    term's loss is summed over the first ``ranking_rows`` rows and the batch that crosses them."""
    model.eval()
    objective.reseed(seed)
    total, n_loss, sq, n = 0.0, 0, 0.0, 0
    rating_only = isinstance(objective, Rating)
    for users, items, ratings in loader.epoch(0):
        users, items, ratings = users.to(device), items.to(device), ratings.to(device)
        if rating_only or n_loss >= ranking_rows:
            if not objective.predicts_ratings:
                break  # nothing left to sum: the loss has its rows and there is no squared error
            err = float(((model(users, items).float() - ratings) ** 2).sum(dtype=torch.float64))
            sq += err
            if rating_only:  # the loss is the squared error: one pass, summed in float64
                total, n_loss = total + err, n_loss + len(ratings)
        else:
            loss, mse = objective.loss(model, users, items, ratings)
            total, n_loss = total + float(loss) * len(ratings), n_loss + len(ratings)
            sq += float(mse) * len(ratings) if mse is not None else math.nan
        n += len(ratings)
    return total, n_loss, sq, n


def validate(model: nn.Module, objective: Any, loader: Any, device: torch.device,
             ranks: Ranks = SINGLE) -> Tuple[float, float]:
    """(the objective's mean loss, MSE or NaN) over the validation split (every rank's shard of it)."""
    total, n_loss, sq, n = ranks.sum(validation_sums(model, objective, loader, device, VALIDATION_SEED + ranks.rank))
    return total / max(n_loss, 1), sq / max(n, 1)
