"""The pure parts of a search: the trials of a space, the rungs of successive halving, who survives.

Successive halving (Jamieson & Talwalkar 2016; the synchronous form of
Hyperband's inner loop): every trial trains for ``min_epochs`` in rung 0; the
best ``1 / eta`` of them (by the metric) go on to rung 1 with ``eta`` times the
epochs, and so on until the survivors train for their full ``epochs``. Most of
the budget goes to the configurations that look best early; a poor one stops
after the first rung.
"""
from __future__ import annotations

import itertools
import math
import random
from typing import Any, Dict, List, Sequence



def trials(space: Dict[str, Sequence[Any]], count: int, seed: int) -> List[Dict[str, Any]]:
    """The points of the grid ``space`` spans (every one with ``count`` 0, else ``count`` drawn with ``seed``)."""
    keys = sorted(space)
    points = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if count and count < len(points):
        points = random.Random(seed).sample(points, count)
    return points


def rung_epochs(full: int, min_epochs: int, eta: int, rung: int) -> int:
    """The epochs a trial whose full run is ``full`` epochs trains in ``rung``."""
    return min(full, min_epochs * eta ** rung)


def survivors(scores: Dict[int, float], eta: int, lower_is_better: bool) -> List[int]:
    """The trial ids that go on: the best ``ceil(n / eta)`` (ties by id; a NaN score never survives)."""
    ranked = sorted((s if lower_is_better else -s, t) for t, s in scores.items() if not math.isnan(s))
    return sorted(t for _, t in ranked[:max(1, math.ceil(len(scores) / eta))])


def ndcg_at_k(lists: Dict[int, Sequence[int]], relevant: Dict[int, set], k: int) -> float:
    """Mean binary-relevance NDCG@k over the users with a relevant item (the evaluate stage's definition:
    gain ``1 / log2(rank + 1)``, ideal ``min(k, relevant)`` hits; a user without a list scores 0)."""
    total = 0.0
    for user, wanted in relevant.items():
        got = list(lists.get(user, []))[:k]
        dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(got) if item in wanted)
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(wanted))))
        total += dcg / ideal
    return total / max(1, len(relevant))
