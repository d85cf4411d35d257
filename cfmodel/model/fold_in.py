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

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from cfmodel.errors import CfError

# How far inside y_range a rating is pulled before the sigmoid's inverse.
EDGE = 1e-3
# Newton steps of the softmax fold-in: from zero, 4 reach the optimum (MovieLens small: the objective within
# 1e-7 of 10 steps'; 3 within 1e-4).
RANK_NEWTON_STEPS = 4
# Floats of one chunk's (users, d, items) Hessian product in the softmax fold-in (64 MB).
CHUNK_ELEMENTS = 16_000_000


def rows_per_chunk(floats_per_row: int) -> int:
    """How many rows of ``floats_per_row`` floats one chunk holds within :data:`CHUNK_ELEMENTS` (at least 1)."""
    return max(1, CHUNK_ELEMENTS // max(1, floats_per_row))


def fixed_side(table: np.ndarray, bias: Optional[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(factors, biases) of the side a fold-in holds fixed, as float64 tensors; biases 0 when it has none."""
    q = torch.as_tensor(table, dtype=torch.float64)
    return q, torch.zeros(len(q), dtype=torch.float64) if bias is None else torch.as_tensor(bias, dtype=torch.float64)


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


def in_chunks(solve: Callable, items: Sequence[np.ndarray], ratings: Sequence[np.ndarray], width: int,
              padded: bool = True, budget: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``solve(items, ratings)`` (a row solver: factors and biases by row) on runs of rows sorted by length,
    each run's design at most ``budget`` floats of ``width`` (``padded``: rows × the longest, else the sum of
    lengths): a partition's batch of thousands of users, one of them with thousands of ratings, stays
    within memory."""
    budget = budget or CHUNK_ELEMENTS
    if not len(items):
        return solve(items, ratings)
    order = np.argsort([len(i) for i in items], kind="stable")
    factors, biases = [None] * len(items), np.zeros(len(items), np.float32)
    start = 0
    while start < len(order):
        end, size = start + 1, max(1, len(items[order[start]])) * width
        while end < len(order):
            length = max(1, len(items[order[end]])) * width
            size = (end + 1 - start) * length if padded else size + length
            if size > budget:
                break
            end += 1
        pick = order[start:end]
        f, b = solve([items[n] for n in pick], [ratings[n] for n in pick])
        for row, n in enumerate(pick):
            factors[n] = f[row]
        biases[pick] = b
        start = end
    return np.stack(factors), biases


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
    q, c = fixed_side(item_factors, item_bias)
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


def fold_in_ranking(item_rows: np.ndarray, item_bias: Optional[np.ndarray],
                    offsets: Optional[Tuple[np.ndarray, np.ndarray]], items: Sequence[np.ndarray], reg: float,
                    newton_steps: int = RANK_NEWTON_STEPS) -> np.ndarray:
    """Ranking factors ``(users, d)`` of users from the items they rated: Newton steps on a full softmax over
    every item (the rated ones the positives), ``λ n ‖x‖²`` regularised; the item table is fixed.

    ``offsets``: (user rows, item rows) whose products the user's score already has (a hybrid's rating
    part), or None. Users are solved a chunk at a time, so memory stays near :data:`CHUNK_ELEMENTS` floats
    whatever the batch.
    """
    s = torch.as_tensor(item_rows, dtype=torch.float32)
    bias = None if item_bias is None else torch.as_tensor(item_bias, dtype=torch.float32)
    chunk = rows_per_chunk(s.shape[0] * s.shape[1])
    out = np.zeros((len(items), s.shape[1]), np.float32)
    for at in range(0, len(items), chunk):
        rows = slice(at, at + chunk)
        base = torch.zeros((len(items[rows]), len(s))) if offsets is None else \
            torch.as_tensor(offsets[0][rows], dtype=torch.float32) @ torch.as_tensor(offsets[1], dtype=torch.float32).T
        out[rows] = _softmax_newton(s, base if bias is None else base + bias[None, :], items[rows], reg, newton_steps)
    return out


def _softmax_newton(s: torch.Tensor, base: torch.Tensor, items: Sequence[np.ndarray], reg: float,
                    newton_steps: int) -> np.ndarray:
    """Newton's method on
    ``Σ_u [n_u log Σ_i exp(base_ui + x_u·s_i) − Σ_{rated} (base + x_u·s) + λ n_u ‖x_u‖²]``
    for one chunk of users; float32, which agrees with float64 to the objective's 1e-6."""
    counts = torch.tensor([float(len(i)) for i in items])
    positives = torch.zeros_like(base)
    for row, i in enumerate(items):
        positives[row, torch.as_tensor(np.asarray(i, np.int64))] = 1.0
    rated_sum = positives @ s
    x = torch.zeros((len(items), s.shape[1]))
    ridge = (2 * reg * counts[:, None, None] + 1e-6) * torch.eye(s.shape[1])
    for _ in range(newton_steps):
        pi = torch.softmax(base + x @ s.T, dim=1)
        mean = pi @ s                                            # (users, d): E[s] under the softmax
        grad = counts[:, None] * mean - rated_sum + 2 * reg * counts[:, None] * x
        # Σ_i π_i s_i s_iᵀ as one batched matmul: (users, d, items) @ (items, d).
        second = torch.matmul(s.T[None] * pi[:, None, :], s) - mean[:, :, None] * mean[:, None, :]
        x = x - torch.linalg.solve(counts[:, None, None] * second + ridge, grad[..., None])[..., 0]
    return x.numpy()


def fold_in_lists(rating_solver: Optional[Callable], item_rows: np.ndarray, item_bias: Optional[np.ndarray],
                  items: Sequence[np.ndarray], ratings: Sequence[np.ndarray],
                  reg: float) -> Tuple[np.ndarray, np.ndarray]:
    """(list factors ``(users, d)``, list biases ``(users,)``: zeros, a ranking score's user bias changes no
    order) of a ranking model's new users. ``item_rows``/``item_bias``: the item side the lists rank with.
    ``rating_solver`` None (bpr, softmax): the whole vector from the softmax; else (a hybrid) the rating
    factors it solves lead the vector and fix the offsets under the ranking head's factors."""
    if rating_solver is None:
        factors = fold_in_ranking(item_rows, item_bias, None, items, reg)
    else:
        rating = rating_solver(items, ratings)[0]
        k = rating.shape[1]
        extra = fold_in_ranking(item_rows[:, k:], item_bias, (rating, item_rows[:, :k]), items, reg)
        factors = np.concatenate([rating, extra], axis=1)
    return factors, np.zeros(len(items), np.float32)


@dataclass(frozen=True)
class UserSample:
    """Known users standing in for all of them in the softmax terms of a new item: a uniform sample's
    indices, their log-normalisers over the model's items and weights ``n_u × users / sample size``."""

    index: np.ndarray
    log_norm: np.ndarray
    weight: np.ndarray


def user_sample(user_rows: np.ndarray, item_rows: np.ndarray, item_bias: Optional[np.ndarray],
                counts: np.ndarray, size: int, seed: int = 0) -> UserSample:
    """A :class:`UserSample` of up to ``size`` of the users with ``counts`` (their ratings in the period the
    new items' ratings come from) above 0, from a ranking model's list tables."""
    active = np.nonzero(counts > 0)[0]  # none: no new item can have raters the model knows either
    pick = np.sort(np.random.default_rng(seed).choice(active, min(size, len(active)), replace=False))
    items = torch.as_tensor(item_rows, dtype=torch.float32)
    bias = torch.zeros(len(items)) if item_bias is None else torch.as_tensor(item_bias, dtype=torch.float32)
    chunk = rows_per_chunk(len(items))
    norm = np.concatenate([torch.logsumexp(torch.as_tensor(user_rows[pick[at:at + chunk]], dtype=torch.float32)
                                           @ items.T + bias, dim=1).numpy()
                           for at in range(0, len(pick), chunk)] + [np.zeros(0, np.float32)])
    return UserSample(pick, norm, counts[pick].astype(np.float64) * len(active) / max(1, len(pick)))


def fold_in_ranking_items(user_rows: np.ndarray, sample: UserSample, raters: Sequence[np.ndarray], reg: float,
                          offsets: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                          newton_steps: int = 2 * RANK_NEWTON_STEPS) -> Tuple[np.ndarray, np.ndarray]:
    """(ranking factors ``(items, d)``, biases ``(items,)``) of new items from the users who rated them, the
    users fixed.

    In every user's full softmax a new item j adds ``Σ_{u rated j} s_uj − Σ_u n_u exp(s_uj − log Z_u)`` to
    the log-likelihood (``Z_u`` barely moves for one item; ``n_u``: u's ratings in the same period as j's,
    so a week-old movie is weighed against a week of everyone's ratings), a Poisson regression in
    ``(q_j, b_j)`` whose second sum ``sample`` estimates; Newton steps from the best bias alone,
    ``λ n_j ‖q‖²`` regularised.
    ``offsets``: (user rows, item rows) whose products the score already has (a hybrid's rating part).
    """
    x = torch.as_tensor(user_rows, dtype=torch.float32)
    design = torch.cat([x[torch.as_tensor(sample.index)], torch.ones(len(sample.index), 1)], dim=1)
    shift = torch.as_tensor(np.log(sample.weight) - sample.log_norm, dtype=torch.float32)
    chunk = rows_per_chunk(design.shape[0] * design.shape[1])
    factors, biases = np.zeros((len(raters), x.shape[1]), np.float32), np.zeros(len(raters), np.float32)
    for at in range(0, len(raters), chunk):
        rows = slice(at, at + chunk)
        base = shift[None, :].expand(len(raters[rows]), -1)
        if offsets is not None:
            base = base + torch.as_tensor(offsets[1][rows], dtype=torch.float32) @ \
                torch.as_tensor(offsets[0][sample.index], dtype=torch.float32).T
        factors[rows], biases[rows] = _poisson_newton(x, design, base, raters[rows], reg, newton_steps)
    return factors, biases


def _poisson_newton(x: torch.Tensor, design: torch.Tensor, base: torch.Tensor, raters: Sequence[np.ndarray],
                    reg: float, newton_steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Newton's method for one chunk of new items: maximise ``Σ_{raters} (x·q + b) − Σ_sample exp(base +
    x·q + b) − λ n ‖q‖²`` from the best bias alone."""
    d = x.shape[1]
    penalty = torch.eye(d + 1)
    penalty[d, d] = 0.0
    counts = torch.tensor([float(len(r)) for r in raters])
    rated = torch.stack([torch.cat([x[torch.as_tensor(np.asarray(r, np.int64))].sum(0), counts[n:n + 1]])
                         for n, r in enumerate(raters)]) if len(raters) else torch.zeros(0, d + 1)
    theta = torch.zeros(len(raters), d + 1)
    theta[:, d] = torch.log(counts.clamp(min=1.0)) - torch.logsumexp(base, dim=1)
    ridge = 2 * reg * counts[:, None, None] * penalty + 1e-6 * torch.eye(d + 1)
    for _ in range(newton_steps):
        rate = torch.exp(base + theta @ design.T)
        grad = rated - rate @ design - (ridge @ theta[..., None])[..., 0]
        hess = torch.matmul(design.T[None] * rate[:, None, :], design) + ridge
        theta = theta + torch.linalg.solve(hess, grad[..., None])[..., 0]
    return theta[:, :d].numpy(), theta[:, d].numpy()


def fold_in_list_items(rating_solver: Optional[Callable], user_rows: np.ndarray, sample: UserSample,
                       raters: Sequence[np.ndarray], ratings: Sequence[np.ndarray], reg: float):
    """(list factors, list biases) of a ranking model's new items: :func:`fold_in_ranking_items` on the
    whole vector (bpr, softmax), or (a hybrid) after ``rating_solver`` gives the rating factors that lead it."""
    if rating_solver is None:
        return fold_in_ranking_items(user_rows, sample, raters, reg)
    rating = rating_solver(raters, ratings)[0]
    k = rating.shape[1]
    head, bias = fold_in_ranking_items(user_rows[:, k:], sample, raters, reg, offsets=(user_rows[:, :k], rating))
    return np.concatenate([rating, head], axis=1), bias
