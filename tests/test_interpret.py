"""Interpretation helpers on small hand-made tables."""
import numpy as np
import pandas as pd
import pytest

from cfmodel.errors import InputError
from cfmodel.evaluate.interpret import bias_extremes, crosstab, movie_table, pca, popular, similar


def _movies():
    factors = [np.array(v, dtype=np.float32) for v in ([1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [-1, 0, 0.1])]
    item_factors = pd.DataFrame({"id": [10, 20, 30, 40], "idx": [0, 1, 2, 3], "bias": [0.5, -0.2, 0.9, -0.7],
                                 "features": factors})
    items = pd.DataFrame({"item_id": [10, 20, 30, 40], "n_ratings": [50, 80, 5, 80],
                          "mean_rating": [4.0, 3.0, 4.5, 2.0]})
    titles = pd.DataFrame({"item_id": [10, 20, 40], "title": ["Alpha", "Beta", "Delta"]})
    return movie_table(item_factors, items, titles)


def test_movie_table_fills_missing_titles_and_popular_orders_by_count():
    movies = _movies()
    assert movies["title"].tolist() == ["Alpha", "Beta", "movie 30", "Delta"]
    assert popular(movies, 3)["item_id"].tolist() == [20, 40, 10]  # ties by lower id


def test_bias_extremes():
    ends = bias_extremes(_movies(), n=2)
    assert ends["highest"]["title"].tolist() == ["movie 30", "Alpha"]
    assert ends["lowest"]["title"].tolist() == ["Delta", "Beta"]
    assert ends["lowest"]["mean_rating"].tolist() == [2.0, 3.0]


def test_pca_finds_the_planted_direction():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5
    factors = rng.normal(0, 5, (500, 1)) * direction + rng.normal(0, 0.1, (500, 3))
    coords, explained = pca(factors, 2)
    assert explained[0] > 0.95 and coords.shape == (500, 2)
    # The first component's coordinate is the projection onto the planted direction.
    proj = (factors - factors.mean(0)) @ direction
    assert abs(np.corrcoef(coords[:, 0], proj)[0, 1]) > 0.99


def test_similar_by_cosine():
    near = similar(_movies(), 10, n=3)
    assert near["title"].tolist() == ["Beta", "movie 30", "Delta"]
    assert near["cosine"].iloc[0] == pytest.approx(0.9 / np.sqrt(0.82))
    with pytest.raises(InputError, match="movie 99"):
        similar(_movies(), 99)


def test_crosstab_side_by_side():
    ratings = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 10], "rating": [4.0, 3.0, 5.0]})
    predicted = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 20, 10, 20],
                              "prediction": [3.9, 3.2, 4.6, 4.1]})
    tables = crosstab(ratings, predicted, {10: "Alpha", 20: "Beta"})
    assert list(tables["actual"].columns) == ["Alpha", "Beta"]
    assert np.isnan(tables["actual"].loc[2, "Beta"]) and tables["actual"].loc[1, "Beta"] == 3.0
    assert tables["predicted"].loc[2, "Beta"] == pytest.approx(4.1)
