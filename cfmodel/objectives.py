"""What each training objective is, in one table that every stage asks.

An objective decides what a model learns (ratings, lists or both), how it
trains by default, how score reads its lists and how fold-in solves a newcomer.
Stages never test an objective by name: they read its :class:`Objective` here
(``spec(name).predicts_ratings``), so a new objective is one row of
:data:`OBJECTIVES` plus its loss in :mod:`cfmodel.train.objectives`.

The losses themselves live with the trainer; ``docs/design.md`` has the maths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from cfmodel.errors import ConfigError

FEEDBACKS = ("explicit", "implicit")


@dataclass(frozen=True)
class Objective:
    """One training objective's contract.

    - ``predicts_ratings``: the model's :meth:`predict` is a rating (RMSE is reported, ``valid_rmse`` can
      pick tune's winner, the rating tables' decay is capped per epoch, the user bias is trained).
    - ``ranking_term``: the loss that learns lists (``bpr`` or ``softmax``), ``"head"`` when it is the
      configured ``train.hybrid_ranking`` on a ranking head, None for none.
    - ``ranking_head``: the model has extra ranking factors beside its rating factors (needs a bilinear
      model); its lists are ranked by them and exported as ``rank_*_factors/``.
    - ``epochs``, ``wd``: what ``train.epochs: null`` and ``train.wd: null`` resolve to.
    - ``softmax_samples``: what ``train.softmax_samples: null`` resolves to (items drawn per batch for a
      sampled softmax term; unused by an objective without one).
    - ``feedback``: the prepared data it trains on (``explicit`` ratings, ``implicit`` event counts).
    - ``lists_by_rating``: its lists are ordered by the predicted rating, so score's ``score`` column is a
      ``predicted_rating`` and fold-in solves only the rating factors; otherwise the ``score`` is a
      ``ranking_score`` and fold-in solves list factors by Newton steps on a full softmax.
    """

    name: str
    predicts_ratings: bool
    ranking_term: Optional[str]
    ranking_head: bool
    epochs: int
    wd: float
    softmax_samples: int
    feedback: Tuple[str, ...]
    lists_by_rating: bool

    @property
    def score_meaning(self) -> str:
        """What the ``score`` column of its lists means: ``predicted_rating`` or ``ranking_score``."""
        return "predicted_rating" if self.lists_by_rating else "ranking_score"

    def ranking_loss(self, hybrid_ranking: str) -> Optional[str]:
        """The ranking loss it trains (``bpr`` or ``softmax``), the head's being ``hybrid_ranking``."""
        return hybrid_ranking if self.ranking_term == "head" else self.ranking_term

    def default_sampling(self, hybrid_ranking: str) -> str:
        """How its ranking term draws items by default: ``uniform`` for bpr, ``popularity`` (log-q
        corrected) for the softmax terms."""
        return "uniform" if self.ranking_loss(hybrid_ranking) == "bpr" else "popularity"


# Epochs and decay: a ranking-only model gains from three times the Adam steps with stronger decoupled
# decay (softmax from four times, at 0.6); a rating model overfits sooner. Softmax samples: the hybrid's
# head makes lists 3-4% better with 1024 than with 512 at the same RMSE (for 1.8x its training time),
# while a softmax model's gain from 1024 on MovieLens events turned into a loss on planted events, so it
# keeps 512 (docs/design.md has the figures for both choices).
OBJECTIVES: Dict[str, Objective] = {o.name: o for o in (
    Objective("rating", predicts_ratings=True, ranking_term=None, ranking_head=False, epochs=8, wd=1.5,
              softmax_samples=512, feedback=("explicit",), lists_by_rating=True),
    Objective("bpr", predicts_ratings=False, ranking_term="bpr", ranking_head=False, epochs=24, wd=0.5,
              softmax_samples=512, feedback=FEEDBACKS, lists_by_rating=False),
    Objective("softmax", predicts_ratings=False, ranking_term="softmax", ranking_head=False, epochs=32, wd=0.6,
              softmax_samples=512, feedback=FEEDBACKS, lists_by_rating=False),
    Objective("hybrid", predicts_ratings=True, ranking_term="head", ranking_head=True, epochs=8, wd=1.5,
              softmax_samples=1024, feedback=("explicit",), lists_by_rating=False),
)}
NAMES = tuple(OBJECTIVES)
RANKING_LOSSES = ("softmax", "bpr")
# What ``train.objective: auto`` trains, by the prepared data's feedback: on ratings the model that both
# predicts them and ranks, on events the best ranking-only objective.
AUTO = {"explicit": "hybrid", "implicit": "softmax"}


def valid(name: str) -> bool:
    """Whether ``train.objective`` may say ``name``: an objective, or ``auto``."""
    return name == "auto" or name in OBJECTIVES


def spec(name: str) -> Objective:
    """The objective called ``name``; ``auto`` must be resolved first (:func:`resolve`)."""
    if name == "auto":
        raise ConfigError("train.objective=auto is resolved from the prepared data's feedback before training")
    if name not in OBJECTIVES:
        raise ConfigError(f"train.objective must be auto or one of {NAMES}, got {name!r}")
    return OBJECTIVES[name]


def resolve(name: str, feedback: str, data: str = "the prepared data") -> Objective:
    """``name`` made concrete for data of this ``feedback`` (``auto`` by :data:`AUTO`); an objective that
    cannot train on it is a :class:`ConfigError` naming the key."""
    objective = spec(AUTO[feedback] if name == "auto" else name)
    if feedback not in objective.feedback:
        kind = "implicit feedback (events, no ratings)" if feedback == "implicit" else "ratings"
        usable = [n for n, o in OBJECTIVES.items() if feedback in o.feedback]
        raise ConfigError(f"train.objective={objective.name} predicts ratings, but {data} holds {kind}: "
                          f"use train.objective=auto, {', '.join(usable[:-1])} or {usable[-1]}")
    return objective


def stored(name: Optional[str]) -> Objective:
    """The objective a saved model records (``rating`` for models saved before objectives existed)."""
    return spec(name or "rating")
