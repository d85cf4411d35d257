"""Reading a trained model, as the lesson does (driver-side, on the small item tables).

- movie biases next to the raw mean rating and count: the bias is what is left
  of a movie's rating once each user's generosity is taken out;
- PCA of the movie factors, with the movies at each end of the first components;
- nearest movies by cosine similarity of their factors;
- the top raters × top movies table, actual and predicted ratings side by side.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from cfmodel.errors import InputError
from cfmodel.titles import with_titles


def movie_table(item_factors: pd.DataFrame, items: pd.DataFrame, titles: Optional[pd.DataFrame]) -> pd.DataFrame:
    """One row per movie: ``item_id, title, n_ratings, mean_rating, bias, features`` (by ``idx``).

    ``item_factors`` is the exported table (``id, idx, bias, features``), ``items``
    the prepare job's map (``item_id, n_ratings, mean_rating``).
    """
    table = (item_factors.rename(columns={"id": "item_id"})
             .merge(items[["item_id", "n_ratings", "mean_rating"]], on="item_id", how="left")
             .sort_values("idx", ignore_index=True))
    table = with_titles(table, titles)
    if "title" not in table:
        table["title"] = pd.NA
    table["title"] = table["title"].fillna(table["item_id"].map(lambda i: f"movie {i}"))
    return table


def popular(movies: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` most-rated movies (ties: lower id), as the lesson restricts its analysis."""
    return movies.sort_values(["n_ratings", "item_id"], ascending=[False, True]).head(n)


def bias_extremes(movies: pd.DataFrame, n: int = 15) -> Dict[str, pd.DataFrame]:
    """``highest`` and ``lowest`` learned bias: title, bias, raw mean rating, count."""
    cols = ["title", "bias", "mean_rating", "n_ratings"]
    ranked = movies.dropna(subset=["bias"]).sort_values(["bias", "item_id"], ascending=[False, True])
    return {"highest": ranked.head(n)[cols].reset_index(drop=True),
            "lowest": ranked.tail(n).iloc[::-1][cols].reset_index(drop=True)}


def pca(factors: np.ndarray, n_components: int = 3) -> tuple:
    """(coordinates (n, c), explained variance ratio (c,)) of the centred factors, by SVD."""
    centred = factors - factors.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    c = min(n_components, vt.shape[0])
    # Sign convention: the largest loading of each component is positive, so reruns agree.
    signs = np.sign(vt[np.arange(c), np.abs(vt[:c]).argmax(axis=1)])
    coords = centred @ (vt[:c].T * signs)
    var = s ** 2
    return coords, (var[:c] / var.sum()) if var.sum() else np.zeros(c)


def component_ends(movies: pd.DataFrame, coords: np.ndarray, n: int = 10) -> List[pd.DataFrame]:
    """Per component, a frame of the ``n`` movies at its top and bottom end."""
    out = []
    for c in range(coords.shape[1]):
        order = np.argsort(-coords[:, c], kind="stable")
        top, bottom = order[:n], order[::-1][:n]
        out.append(pd.DataFrame({"top": movies["title"].to_numpy()[top], "top_score": coords[top, c],
                                 "bottom": movies["title"].to_numpy()[bottom], "bottom_score": coords[bottom, c]}))
    return out


def similar(movies: pd.DataFrame, item_id: int, n: int = 10) -> pd.DataFrame:
    """The ``n`` movies nearest ``item_id`` by cosine similarity of their factors.

    Raises
    ------
    InputError
        ``item_id`` is not among the movies.
    """
    factors = np.stack(movies["features"].to_numpy()).astype(np.float64)
    hit = np.nonzero(movies["item_id"].to_numpy() == item_id)[0]
    if not len(hit):
        raise InputError(f"movie {item_id} (evaluate.similar_to) is not in the model")
    unit = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit[hit[0]]
    cosine[hit[0]] = -np.inf
    order = np.argsort(-cosine, kind="stable")[:n]
    return pd.DataFrame({"title": movies["title"].to_numpy()[order], "cosine": cosine[order],
                         "n_ratings": movies["n_ratings"].to_numpy()[order]})


def crosstab(ratings: pd.DataFrame, predicted: pd.DataFrame, titles: Dict[int, str]) -> Dict[str, pd.DataFrame]:
    """The lesson's spreadsheet view: ``actual`` and ``predicted`` user × movie tables.

    ``ratings`` has ``user_id, item_id, rating`` (what the top raters gave the top
    movies; NaN where they did not rate); ``predicted`` has every pair with
    ``prediction``. Columns are titled and ordered as ``predicted`` lists them.
    """
    users = list(dict.fromkeys(predicted["user_id"]))
    items = list(dict.fromkeys(predicted["item_id"]))
    actual = ratings.pivot_table(index="user_id", columns="item_id", values="rating").reindex(index=users,
                                                                                              columns=items)
    pred = predicted.pivot_table(index="user_id", columns="item_id", values="prediction").reindex(index=users,
                                                                                                  columns=items)
    names = [titles.get(i, f"movie {i}") for i in items]
    actual.columns, pred.columns = names, names
    return {"actual": actual, "predicted": pred}
