"""The synthetic ratings generator: format, determinism, skew and planted signal."""
import hashlib

import numpy as np
import pandas as pd

from cfmodel.config import GenerateConfig
from cfmodel.generate import generate, planted_model

CFG = GenerateConfig(n_users=300, n_items=400, n_ratings=15_000, n_factors=4, noise=0.3, seed=5)


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_movielens_format_and_values(tmp_path):
    out = generate(CFG, str(tmp_path))
    ratings = pd.read_csv(out["ratings"])
    assert list(ratings.columns) == ["userId", "movieId", "rating", "timestamp"]
    assert out["rows"] == len(ratings)
    assert abs(len(ratings) - CFG.n_ratings) / CFG.n_ratings < 0.05
    assert ratings["rating"].between(0.5, 5.0).all()
    assert ((ratings["rating"] * 2) % 1 == 0).all()
    assert not ratings.duplicated(["userId", "movieId"]).any()
    assert ratings["userId"].min() >= 1 and ratings["movieId"].min() >= 1
    movies = pd.read_csv(out["movies"])
    assert list(movies.columns) == ["movieId", "title", "genres"]
    assert set(ratings["movieId"]) <= set(movies["movieId"])
    assert movies["title"].str.match(r".+ \(\d{4}\)$").all()


def test_deterministic_for_a_seed(tmp_path):
    a = generate(CFG, str(tmp_path / "a"))
    b = generate(CFG, str(tmp_path / "b"))
    c = generate(GenerateConfig(**{**CFG.__dict__, "seed": 6}), str(tmp_path / "c"))
    assert _sha(a["ratings"]) == _sha(b["ratings"])
    assert _sha(a["movies"]) == _sha(b["movies"])
    assert _sha(a["ratings"]) != _sha(c["ratings"])


def test_power_law_popularity_and_activity(tmp_path):
    ratings = pd.read_csv(generate(CFG, str(tmp_path))["ratings"])
    per_item = ratings.groupby("movieId").size().sort_values(ascending=False)
    top_decile = per_item.iloc[: len(per_item) // 10].sum() / per_item.sum()
    assert top_decile > 0.3, top_decile  # uniform popularity would give about 0.1
    per_user = ratings.groupby("userId").size()
    # Heavy users are capped at a third of the catalogue (133 movies here).
    assert per_user.max() > 3 * per_user.median()


def test_ratings_carry_the_planted_signal(tmp_path):
    ratings = pd.read_csv(generate(CFG, str(tmp_path))["ratings"])
    model = planted_model(CFG)
    u = np.searchsorted(model.user_ids, ratings["userId"].to_numpy())
    i = np.searchsorted(model.item_ids, ratings["movieId"].to_numpy())
    corr = np.corrcoef(model.expected(u, i), ratings["rating"])[0, 1]
    assert corr > 0.8, corr
