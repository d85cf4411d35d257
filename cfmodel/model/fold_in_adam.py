"""Folding new rows into a trained model as its training would have moved them: AdamW in expectation.

The ridge optimum (:func:`cfmodel.model.fold_in.fold_in`) is not where training
leaves a row. The trainer's AdamW moves a user's row only through the batches
that hold one of their ratings, and divides each move by the root of the
squared gradients it has seen. A user with few ratings sees mostly zero
gradients and a few spikes, so Adam moves them far less than their optimum:
an implicit shrinkage, strongest for the sparsest rows, that the trained lists
depend on. On MovieLens small, new users solved by the ridge make lists of
0.83× the NDCG@10 of a retrain, while the same users refit by the trainer's
own optimiser and schedule (items frozen) reach 0.93–1.03× (bench_fold_in).

That refit costs every step of the training run. Here it runs in expectation
instead. Each of a row's ``n`` ratings lands in one of an epoch's ``S``
batches at random, so a step's gradient ``g`` of the batch's mean squared error
(``B`` rows) has mean ``Σ∇_r / S`` and second moment ``Σ∇_r² (1/S)(1 − 1/S)
+ (Σ∇_r / S)²``. Adam's moments follow those expectations. With lazy moments
(:class:`~cfmodel.train.sparse_adamw.SparseAdamW`) they move only at the steps
that hold a rating of the row (probability ``ρ = 1 − (1 − 1/S)^n``), by the
gradient given such a step: the same moments over ``ρ``. Decoupled decay is
owed at every step either way.

The train stage's record (:func:`cfmodel.train.optim.optimizer_record`) cuts
the run into a few dozen segments. Each segment of ``k`` steps moves the moments
``β^k`` of the way towards their expectations (``β^{kρ}`` lazily), decays the
row by ``Π(1 − lr·wd)``, and moves it by ``Σ lr × m̂ / (√v̂ + ε)``
(``ρ Σ lr`` lazily). Sixty-four segments give the lists of the step-by-step refit
(measured: 50 segments and 625 steps agree to 0.01 NDCG).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from cfmodel.model.fold_in import fixed_side


def fold_in_adam(other: np.ndarray, other_bias: Optional[np.ndarray], y_range: Optional[Tuple[float, float]],
                 items: Sequence[np.ndarray], ratings: Sequence[np.ndarray], record: Dict[str, Any],
                 fit_bias: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """(factors ``(rows, k)``, biases ``(rows,)``) of new rows from the other side's indices they were rated
    with and the ratings, the other side fixed: AdamW's run over ``record`` in expectation (module doc).

    ``y_range`` is the sigmoid range of ``dot_bias`` (None: the identity of ``dot``); the rows start at 0.
    """
    q, c = fixed_side(other, other_bias)
    k = q.shape[1]
    # Flat, not padded: every segment touches every rating, and one long row would pad all the others.
    counts = torch.tensor([float(len(i)) for i in items], dtype=torch.float64)
    row = torch.repeat_interleave(torch.arange(len(items)), counts.long())
    idx = torch.as_tensor(np.concatenate([np.asarray(i, np.int64) for i in items] + [np.zeros(0, np.int64)]))
    r = torch.as_tensor(np.concatenate([np.asarray(v, np.float64) for v in ratings] + [np.zeros(0)]))
    x = torch.cat([q[idx], torch.full((len(idx), 1), 1.0 if fit_bias else 0.0, dtype=torch.float64)], dim=1)
    offset = c[idx]
    batch, per_epoch = float(record["batch_size"]), float(record["steps_per_epoch"])
    beta1, beta2 = record["betas"]
    # The chance that a step holds one of the row's ratings: 1 without lazy moments (every step moves them).
    visit = ((1 - (1 - 1 / per_epoch) ** counts).clamp(min=1e-12) if record["lazy"]
             else torch.ones_like(counts))[:, None]
    theta = torch.zeros((len(items), k + 1), dtype=torch.float64)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    step = 0
    for steps, lr_sum, keep, keep_bias in record["segments"]:
        grads = _rating_gradients(x, theta[row], offset, r, y_range) / batch
        mean = torch.zeros_like(theta).index_add_(0, row, grads) / per_epoch
        second = (torch.zeros_like(theta).index_add_(0, row, grads ** 2) * (1 / per_epoch) * (1 - 1 / per_epoch)
                  + mean ** 2)
        moves = steps * visit
        m = beta1 ** moves * m + (1 - beta1 ** moves) * mean / visit
        v = beta2 ** moves * v + (1 - beta2 ** moves) * second / visit
        step += steps
        m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
        decay = torch.full((k + 1,), math.exp(keep), dtype=torch.float64)
        decay[k] = math.exp(keep_bias)
        theta = theta * decay - lr_sum * visit * m_hat / (v_hat.sqrt() + record["eps"])
    return theta[:, :k].float().numpy(), theta[:, k].float().numpy()


def _rating_gradients(x: torch.Tensor, theta: torch.Tensor, offset: torch.Tensor, r: torch.Tensor,
                      y_range: Optional[Tuple[float, float]]) -> torch.Tensor:
    """``(ratings, k + 1)``: each rating's gradient of its squared error in its row's factors and bias
    (``theta``: the row's, per rating)."""
    raw = (x * theta).sum(1) + offset
    if y_range is None:
        pred, slope = raw, torch.ones_like(raw)
    else:
        low, high = y_range
        s = torch.sigmoid(raw)
        pred, slope = low + (high - low) * s, (high - low) * s * (1 - s)
    return (2 * (pred - r) * slope)[:, None] * x
