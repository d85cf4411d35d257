"""A trained model asked by user and item ids, in pyspark.ml's spirit (``ALSModel.recommendForUserSubset``,
``transform``), for a notebook or a downstream job; :class:`~cfmodel.model.TrainedModel`'s methods
``recommend_for_users`` and ``predict_ratings`` call these.

An id the model does not know never raises: an unknown user gets the fallback list (the items by the
score the model gives an average user with no factors of its own, flagged ``fallback``), as the score
stage's ``fallback: bias`` does; an unknown item is never recommended and its predicted rating is NaN.

>>> import numpy as np
>>> from cfmodel.model import ModelArgs, TrainedModel
>>> args = ModelArgs("dot_bias", n_users=2, n_items=3, n_factors=2)
>>> model = TrainedModel(args, args.build().eval(), np.array([10, 20]), np.array([7, 8, 9]))
>>> lists = model.recommend_for_users([10, 99], n=2, exclude={10: [8]})
>>> lists.columns.tolist()
['user_id', 'rank', 'item_id', 'score', 'fallback']
>>> lists.groupby("user_id")["fallback"].all().to_dict()
{10: False, 99: True}
>>> 8 in lists[lists.user_id == 10].item_id.tolist()
False
>>> model.predict_ratings([(10, 7), (10, 42)])["prediction"].isna().tolist()
[False, True]
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from cfmodel.model.topn import BlockScorer, ItemTable


def positions(known: np.ndarray, ids: Sequence) -> np.ndarray:
    """The index of each of ``ids`` in ``known`` (the model's id map), -1 where it is not there."""
    lookup = pd.Index(known)
    return lookup.get_indexer(pd.Index(list(ids))).astype(np.int64)


def by_bias(head, item_bias: np.ndarray, mean_user_bias: float) -> Tuple[np.ndarray, np.ndarray]:
    """(item indices best first, score per item) of the ``fallback: bias`` list: each item scored by the model
    (``head``) as for an average user (``mean_user_bias``, zero factors), ties to the lower index. The score
    stage (:func:`cfmodel.lists.fallback_ranking`) and :func:`recommend_for_users` both rank by it."""
    with torch.no_grad():
        score = head.output(torch.from_numpy(item_bias + np.float32(mean_user_bias))).numpy()
    return np.lexsort((np.arange(len(score)), -score)).astype(np.int64), score.astype(np.float32)


def fallback_order(model, weight_bias: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`by_bias` for ``model``'s list tables (its users' mean bias); item order for a model without
    item biases."""
    n_items = len(model.item_ids)
    if weight_bias is None or not np.any(weight_bias):
        return np.arange(n_items, dtype=np.int64), np.zeros(n_items, np.float32)
    _, user_bias = model.rank_factors("user")
    mean_user_bias = float(user_bias.mean()) if user_bias is not None and len(user_bias) else 0.0
    return by_bias(model.list_head(), weight_bias, mean_user_bias)


def recommend_for_users(model, ids: Sequence, n: int = 10,
                        exclude: Optional[Dict[object, Iterable]] = None) -> pd.DataFrame:
    """Top-``n`` lists of the users ``ids``: ``user_id, rank, item_id, score, fallback`` (ids as given).

    ``exclude`` maps a user id to item ids never to return (what the user rated; the score stage leaves out
    each user's training items, and validation items with ``score.exclude_valid``); item ids the model does
    not know are ignored. Users the model does not know get the fallback list, flagged ``fallback``."""
    weight, bias = model.rank_factors("item")
    bias = np.zeros(len(weight), np.float32) if bias is None else bias
    table = ItemTable(model.item_ids, weight, bias, np.ones(len(weight), bool))
    order, fallback_score = fallback_order(model, bias)
    scorer = BlockScorer(table, order, fallback_score, n, model.list_head(), block_size=256)
    uw, ub = model.rank_factors("user")
    ids = list(ids)
    where = positions(model.user_ids, ids)
    known = where >= 0
    exclude = exclude or {}
    seen = [positions(model.item_ids, exclude.get(u, ())) for u in ids]
    frame = pd.DataFrame({
        "user_id": np.asarray(ids, dtype=model.user_ids.dtype),
        "features": [uw[i] if k else None for i, k in zip(where, known)],
        "bias": np.where(known, (np.zeros(len(uw), np.float32) if ub is None else ub)[np.maximum(where, 0)],
                         0.0).astype(np.float32),
        "seen": [s[s >= 0].astype(np.int32) for s in seen]})
    return scorer.score_frame(frame)


def predict_ratings(model, pairs: Iterable[Tuple[object, object]]) -> pd.DataFrame:
    """``user_id, item_id, prediction`` for (user id, item id) pairs: the predicted rating (a ranking-only
    model's raw score); a user the model does not know is predicted as an average user (zero factors and
    bias), an item it does not know gets NaN."""
    pairs = list(pairs)
    users = positions(model.user_ids, [u for u, _ in pairs])
    items = positions(model.item_ids, [i for _, i in pairs])
    prediction = np.full(len(pairs), np.nan, np.float32)
    ok = items >= 0
    known_user = ok & (users >= 0)
    if known_user.any():
        prediction[known_user] = model.predict(users[known_user], items[known_user])
    new_user = ok & (users < 0)
    if new_user.any():
        factors, biases = model.factors("user")
        zeros = np.zeros((int(new_user.sum()), factors.shape[1]), np.float32)
        prediction[new_user] = model.predict_factors(zeros, np.zeros(len(zeros), np.float32), items[new_user])
    return pd.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs],
                         "prediction": prediction})
