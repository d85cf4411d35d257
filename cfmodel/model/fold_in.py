"""Folding new users into a trained bilinear model: their factors and bias from their ratings, items fixed.

With the item factors ``q_j`` and biases ``c_j`` fixed, a user's prediction of
item j is ``out(q_j · p + b + c_j)`` (``out``: the model's sigmoid range, or the
identity for ``dot``), so the user's ``(p, b)`` solve a small regularised
least-squares problem over the items they rated:

1. a ridge solve in the space before ``out``: targets ``out⁻¹(r_j) − c_j`` (the
   ratings pulled just inside ``y_range`` so the inverse stays finite),
   minimising ``Σ (q_j · p + b − t_j)² + λ n ‖p‖²`` (the bias is not penalised;
   λ scales with the user's rating count ``n``, as ALS-WR does);
2. then ``newton_steps`` Gauss–Newton steps on the training loss itself, the
   squared error in rating space, which the first solve only approximates where
   ``out`` bends (ratings near the ends of the range).

Every user of a batch is solved at once: their ratings padded into
``(users, max ratings)`` tensors and one batched ``torch.linalg.solve``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from cfmodel.errors import CfError

# How far inside y_range a rating is pulled before the sigmoid's inverse.
EDGE = 1e-3


def _padded(items: Sequence[np.ndarray], ratings: Sequence[np.ndarray]):
    width = max((len(i) for i in items), default=0)
    idx = torch.zeros((len(items), max(width, 1)), dtype=torch.long)
    val = torch.zeros(idx.shape, dtype=torch.float64)
    mask = torch.zeros(idx.shape, dtype=torch.float64)
    for row, (i, r) in enumerate(zip(items, ratings)):
        idx[row, :len(i)] = torch.as_tensor(np.asarray(i, np.int64))
        val[row, :len(r)] = torch.as_tensor(np.asarray(r, np.float64))
        mask[row, :len(i)] = 1.0
    return idx, val, mask


def _design(q: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(users, ratings, k + 1)``: each rated item's factors and a 1 for the user's bias; padding is 0."""
    x = q[idx]
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1) * mask[..., None]


def _penalty(k: int, reg: float, counts: torch.Tensor, fit_bias: bool) -> torch.Tensor:
    """``(users, k + 1, k + 1)``: λ n on the factors' diagonal; on the bias nothing, or (a model without
    user biases) so much that it stays 0."""
    eye = torch.eye(k + 1, dtype=torch.float64)
    eye[k, k] = 0.0
    fixed = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    fixed[k, k] = 0.0 if fit_bias else 1e12
    return reg * counts[:, None, None] * eye + fixed + 1e-9 * torch.eye(k + 1, dtype=torch.float64)


def fold_in(item_factors: np.ndarray, item_bias: Optional[np.ndarray], y_range: Optional[Tuple[float, float]],
            items: Sequence[np.ndarray], ratings: Sequence[np.ndarray], reg: float,
            newton_steps: int = 3, fit_bias: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """(factors ``(users, k)``, biases ``(users,)``) of users from their rated item indices and ratings.

    ``y_range`` is the sigmoid range of ``dot_bias`` (None: the identity of ``dot``).
    """
    if any(len(i) != len(r) for i, r in zip(items, ratings)):
        raise CfError("fold-in: every user needs as many ratings as rated items")
    q = torch.as_tensor(item_factors, dtype=torch.float64)
    c = torch.zeros(len(q), dtype=torch.float64) if item_bias is None else torch.as_tensor(item_bias, dtype=torch.float64)
    k = q.shape[1]
    idx, r, mask = _padded(items, ratings)
    x, counts = _design(q, idx, mask), mask.sum(1)
    penalty = _penalty(k, reg, counts.clamp(min=1.0), fit_bias)
    if y_range is None:
        target = r
    else:
        low, high = y_range
        share = ((r - low) / (high - low)).clamp(EDGE, 1 - EDGE)
        target = torch.log(share) - torch.log1p(-share)
    target = (target - c[idx]) * mask
    theta = torch.linalg.solve(x.transpose(1, 2) @ x + penalty, (x.transpose(1, 2) @ target[..., None]))[..., 0]
    for _ in range(newton_steps if y_range is not None else 0):
        theta = _gauss_newton(theta, x, r, c[idx], mask, penalty, y_range)
    return theta[:, :k].float().numpy(), theta[:, k].float().numpy()


def _gauss_newton(theta, x, r, c, mask, penalty, y_range) -> torch.Tensor:
    """One Gauss–Newton step on ``Σ (out(x·θ + c) − r)² + θᵀ Λ θ``."""
    low, high = y_range
    s = torch.sigmoid((x @ theta[..., None])[..., 0] + c)
    residual = ((s * (high - low) + low) - r) * mask
    slope = (high - low) * s * (1 - s) * mask
    jac = x * slope[..., None]
    grad = (jac.transpose(1, 2) @ residual[..., None])[..., 0] + (penalty @ theta[..., None])[..., 0]
    hess = jac.transpose(1, 2) @ jac + penalty
    return theta - torch.linalg.solve(hess, grad[..., None])[..., 0]


def fold_in_ranking(item_rows: np.ndarray, item_bias: Optional[np.ndarray], offsets: Optional[np.ndarray],
                    items: Sequence[np.ndarray], reg: float, newton_steps: int = 5) -> np.ndarray:
    """Ranking factors ``(users, d)`` of users from the items they rated: Newton steps on a full softmax over
    every item (the rated ones the positives), ``λ n ‖x‖²`` regularised. ``offsets`` ``(users, items)`` holds
    what the user's score already has (a hybrid's rating part); the item table is fixed."""
    s = torch.as_tensor(item_rows, dtype=torch.float64)
    base = torch.zeros((len(items), len(s)), dtype=torch.float64) if offsets is None else \
        torch.as_tensor(offsets, dtype=torch.float64)
    if item_bias is not None:
        base = base + torch.as_tensor(item_bias, dtype=torch.float64)[None, :]
    counts = torch.tensor([float(len(i)) for i in items], dtype=torch.float64)
    positives = torch.zeros_like(base)
    for row, i in enumerate(items):
        positives[row, torch.as_tensor(np.asarray(i, np.int64))] = 1.0
    x = torch.zeros((len(items), s.shape[1]), dtype=torch.float64)
    eye = torch.eye(s.shape[1], dtype=torch.float64)
    for _ in range(newton_steps):
        pi = torch.softmax(base + x @ s.T, dim=1)
        mean = pi @ s                                            # (users, d): E[s] under the softmax
        grad = counts[:, None] * mean - positives @ s + 2 * reg * counts[:, None] * x
        second = torch.einsum("ui,id,ie->ude", pi, s, s) - mean[:, :, None] * mean[:, None, :]
        hess = counts[:, None, None] * second + 2 * reg * counts[:, None, None] * eye + 1e-9 * eye
        x = x - torch.linalg.solve(hess, grad[..., None])[..., 0]
    return x.float().numpy()
