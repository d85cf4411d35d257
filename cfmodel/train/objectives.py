"""Training objectives: what the trainer minimises for a batch of (user, item, rating) rows.

- ``rating``: mean squared error of the predicted rating (the lesson's method).
- ``bpr``: each observed pair against ``negatives`` sampled items the user did
  not rate, ``-log σ(s_pos - s_neg)`` (Rendle et al. 2009).
- ``softmax``: the observed item against ``softmax_samples`` items drawn for
  the whole batch, with the log-q correction for the sampling distribution
  and the row's own item masked among the drawn ones (0: every item, a full
  softmax).
- ``hybrid``: MSE plus ``ranking_weight`` × a ranking term (``softmax`` or
  ``bpr``) computed on the model's ranking head, which reads the rating factors
  without moving them, so one model predicts ratings (as ``rating`` would) and
  ranks.

Ranking terms score the model's ranking rows (``rank_rows``: the ranking
head's when it has one) with its own ``raw_pairs``/``raw_block`` (before the
output transform), leaving out the user bias, which shifts all of a user's
scores alike and cancels in both terms; they use only the rows rated at or
above ``positive_threshold`` (all rows when it is None) and, with a
``confidence`` (implicit feedback only), weigh each row by its event count:
``log`` by 1 + ln(count), ``count`` by the count itself (as if each event were
a row), normalised over the batch. A batch's positive
and negative items are looked up in one call, so each table gets one gradient
pass. Every objective returns ``(loss, mse or None)``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from cfmodel import objectives
from cfmodel.model.nets import CFModule
from cfmodel.objectives import Objective
from cfmodel.train.block_softmax import fill_hits, own_item_hits, sampled_softmax
from cfmodel.train.negatives import NegativeSampler

Loss = Tuple[torch.Tensor, Optional[torch.Tensor]]


class Rating:
    """Mean squared error of predicted ratings."""

    predicts_ratings = True

    def loss(self, model: CFModule, users, items, ratings) -> Loss:
        mse = F.mse_loss(model(users, items).float(), ratings)
        return mse, mse

    def reseed(self, seed: int) -> None:
        """Nothing random here."""

    def unused_parameters(self, model: CFModule) -> List[torch.nn.Parameter]:
        """Parameters this loss never reaches (none)."""
        return []


class _Ranking:
    """A ranking term: the positives of a batch (by ``threshold``) against ``size`` sampled items."""

    predicts_ratings = False

    def __init__(self, sampler: NegativeSampler, size: int, threshold: Optional[float],
                 confidence: str = "none") -> None:
        self.sampler, self.size, self.threshold, self.confidence = sampler, size, threshold, confidence

    def reseed(self, seed: int) -> None:
        self.sampler.reseed(seed)

    def unused_parameters(self, model: CFModule) -> List[torch.nn.Parameter]:
        """The user bias: one constant per user, it cancels out of every ranking term."""
        _, bias = model.tables("user")
        return [] if bias is None else [bias.weight]

    def loss(self, model: CFModule, users, items, ratings, shared: Optional[tuple] = None) -> Loss:
        """``shared``: the batch's (user, item) rating factor rows, already gathered (the hybrid's)."""
        keep = None if self.threshold is None else ratings >= self.threshold
        if keep is not None:
            users, items = users[keep], items[keep]
            shared = None if shared is None else (shared[0][keep], shared[1][keep])
        if not len(users):
            return _zero(model), None
        weight = None
        if self.confidence != "none":
            counts = (ratings if keep is None else ratings[keep]).float().clamp(min=1.0)
            weight = 1.0 + counts.log() if self.confidence == "log" else counts
            weight = weight / weight.sum()
        return self.term(model, users, items, shared, weight), None

    def term(self, model: CFModule, users, items, shared: Optional[tuple],
             weight: Optional[torch.Tensor]) -> torch.Tensor:
        """The term's loss over the rows: their mean, or their sum weighted by ``weight`` (summing to 1)."""
        raise NotImplementedError


def _weighted(losses: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """The mean of per-row ``losses``, or their sum weighted by ``weight``."""
    return losses.mean() if weight is None else (losses * weight).sum()


class Bpr(_Ranking):
    """Bayesian personalised ranking against ``size`` sampled unrated items per positive."""

    def term(self, model, users, items, shared, weight):
        neg, valid = self.sampler.for_users(users, self.size)
        u, (i, ib), (n, nb) = _item_rows(model, users, items, neg.reshape(-1), shared)
        pos = model.raw_pairs(u, i, None, ib).float()
        neg_scores = model.raw_pairs(u.repeat_interleave(self.size, dim=0), n, None, nb).float()
        gap = pos[:, None] - neg_scores.view(-1, self.size)
        if weight is None:
            return -F.logsigmoid(gap)[valid].mean()
        # Each row's weight spread over its valid negatives, so a row's share does not depend on how many it has.
        per_pair = valid.float() * weight[:, None] / valid.sum(1, keepdim=True).clamp(min=1)
        return -(F.logsigmoid(gap) * per_pair).sum() / per_pair.sum().clamp(min=1e-12)


class Softmax(_Ranking):
    """Sampled softmax over ``size`` items drawn per batch, log-q corrected (``size`` 0: a full softmax)."""

    def term(self, model, users, items, shared, weight):
        if not self.size:
            every = torch.arange(self.sampler.rated.n_items, device=users.device)
            logits = model.rank_logits_block(users, every).float()
            return _weighted(F.cross_entropy(logits, items, reduction="none"), weight)
        cand = self.sampler.draw(self.size).to(users.device)
        log_q = self.sampler.log_q.to(users.device)
        if shared is not None:
            return _head_softmax(model, users, items, cand, log_q, shared, weight)
        u, (i, ib), (c, cb) = _item_rows(model, users, items, cand)
        if model.bilinear:  # the block is u @ c.T + the drawn items' biases: the fused form
            return sampled_softmax(model.raw_pairs(u, i, None, ib), u, c, cb, items, cand, log_q, weight=weight)
        pos, others = model.raw_pairs(u, i, None, ib), model.raw_block(u, c, None, cb)
        # log-q correction: each item's logit less the log of its sampling probability.
        pos, others = pos.float() - log_q[items], others.float() - log_q[cand][None, :]
        # The positive is class 0 of [pos, others]: cross_entropy's fused log-softmax is ~1.3x faster on
        # the CPU than logaddexp(pos, logsumexp(others)) - pos, the same value.
        logits = torch.cat([pos[:, None], others], dim=1)
        # The row's own item among the drawn ones would count as its own negative: left out, filled in place on
        # the concatenation (whose backward does not need it), as the fused form zeroes its exponential.
        fill_hits(logits[:, 1:], own_item_hits(items, cand, len(log_q)), float("-inf"))
        target = torch.zeros(len(pos), dtype=torch.long, device=pos.device)
        return _weighted(F.cross_entropy(logits, target, reduction="none"), weight)


class Hybrid:
    """MSE on ratings plus ``weight`` × a ranking term on the ranking head.

    The ranking term reads the rating factors but never moves them (they are
    detached in it): the rating tables get the MSE gradient alone, so the model
    predicts ratings exactly as the ``rating`` objective trains it, on any data,
    and the ranking head learns the lists on top. (With the ranking gradient
    reaching the shared factors, RMSE stayed within 0.4% on MovieLens small but
    lost 5.4% on the demo's planted data.)
    """

    predicts_ratings = True

    def __init__(self, ranking, weight: float) -> None:
        self.ranking, self.weight = ranking, weight

    def reseed(self, seed: int) -> None:
        self.ranking.reseed(seed)

    def unused_parameters(self, model: CFModule) -> List[torch.nn.Parameter]:
        """None: the rating term reaches every rating weight, the ranking term the head."""
        return []

    def loss(self, model: CFModule, users, items, ratings) -> Loss:
        # The rating rows are gathered once and shared (detached) with the ranking term.
        (u, ub), (i, ib) = model.rows("user", users), model.rows("item", items)
        mse = F.mse_loss(model.score_pairs(u, i, ub, ib).float(), ratings)
        rank, _ = self.ranking.loss(model, users, items, ratings, shared=(u.detach(), i.detach()))
        return mse + self.weight * rank, mse


def _head_softmax(model: CFModule, users, items, drawn, log_q, shared: tuple, weight=None) -> torch.Tensor:
    """The sampled softmax term of a hybrid's ranking head, whose score is a plain dot product of
    [rating factors | head factors] rows plus the item's ranking bias, log-q corrected like
    :class:`Softmax`'s. The rating part, which the term must not move, is computed without a gradient
    (:func:`~cfmodel.train.block_softmax.sampled_softmax`'s ``fixed`` columns)."""
    u_rating, i_rating = shared
    drawn_rating = model.tables("item")[0](drawn).detach()
    u_head, _ = model.head_rows("user", users)
    # One lookup of the batch's and the drawn items: each lookup of a dense table costs a table-sized gradient.
    rows, bias = model.head_rows("item", torch.cat([items, drawn]))
    n = len(items)
    (i_head, i_bias), (d_head, d_bias) = (rows[:n], bias[:n]), (rows[n:], bias[n:])
    with torch.no_grad():
        fixed_pos = (u_rating * i_rating).sum(1)
    return sampled_softmax(fixed_pos + (u_head * i_head).sum(1) + i_bias, u_head, d_head, d_bias, items, drawn,
                           log_q, fixed=(u_rating, drawn_rating), weight=weight)


def _item_rows(model: CFModule, users, items, negatives, shared: Optional[tuple] = None):
    """(user ranking rows, (item rows, bias), (negative rows, bias)): the items in one lookup, or, with
    ``shared`` rating rows of the users and items, only the negatives looked up anew."""
    if shared is not None:
        u, _ = model.rank_rows("user", users, factors=shared[0])
        # The negatives' rating factors are read like the shared rows: without a gradient.
        negative_factors = model.tables("item")[0](negatives).detach()
        return (u, model.rank_rows("item", items, factors=shared[1]),
                model.rank_rows("item", negatives, factors=negative_factors))
    u, _ = model.rank_rows("user", users)
    rows, bias = model.rank_rows("item", torch.cat([items, negatives]))
    n = len(items)
    return u, (rows[:n], None if bias is None else bias[:n]), (rows[n:], None if bias is None else bias[n:])


def _zero(model: CFModule) -> torch.Tensor:
    # A batch without positives still needs a loss connected to the graph (zero gradient).
    return sum(p.sum() for p in model.parameters()) * 0.0


def make_objective(objective: Union[str, Objective], sampler: Optional[NegativeSampler], negatives: int,
                   samples: int, threshold: Optional[float], weight: float, hybrid_ranking: str,
                   confidence: str = "none"):
    """The loss of ``objective`` (its :class:`~cfmodel.objectives.Objective`, or its name): MSE alone, a
    ranking term alone, or MSE plus a ranking term on the ranking head."""
    spec = objectives.spec(objective) if isinstance(objective, str) else objective
    term = spec.ranking_loss(hybrid_ranking)
    if term is None:
        return Rating()
    ranking = (Bpr(sampler, negatives, threshold, confidence) if term == "bpr"
               else Softmax(sampler, samples, threshold, confidence))
    return Hybrid(ranking, weight) if spec.predicts_ratings else ranking
