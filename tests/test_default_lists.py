"""The default objective's lists on planted data where taste and popularity disagree.

The generator draws which movies a user rates by popularity (Zipf, as MovieLens) and the ratings by the
planted taste, which is independent of popularity: a user's held-out high ratings are popular movies they
like. Lists that follow popularity alone miss the taste; a rating model's lists (obscure movies with a few
enthusiastic ratings) miss the popularity. The default objective (``auto``: the hybrid on ratings) must
find both.
"""
import pytest

from cfmodel.config import Config, EvaluateConfig, GenerateConfig, PrepareConfig, TrainConfig

pytestmark = pytest.mark.slow  # whole runs on their own data: left out of make test-fast


@pytest.fixture(scope="module")
def taste_data(spark, tmp_path_factory):
    from cfmodel import prepare
    from cfmodel.generate import generate

    root = tmp_path_factory.mktemp("taste")
    planted = GenerateConfig(n_users=500, n_items=300, n_ratings=30_000, n_factors=4, noise=0.3,
                             popularity_skew=1.0, seed=7)
    cfg = Config()
    cfg.prepare = PrepareConfig(input=generate(planted, str(root / "raw"))["ratings"], output=str(root / "prepared"),
                                rows_per_file=10_000, row_group_mb=1)
    prepare.run(spark, cfg, overwrite=False)
    return root, cfg.prepare.output


def _table(spark, prepared, model, baselines):
    from cfmodel.dataset import PreparedData
    from cfmodel.evaluate.compare import evaluate_all, load_split
    from cfmodel.lists import load_inputs
    from cfmodel.storage import Storage

    ev = EvaluateConfig(model=model, data=prepared, baselines=baselines)
    split = load_split(spark, prepared)
    try:
        rows = evaluate_all(spark, split, load_inputs(spark, Storage(spark), ev), ev,
                            PreparedData(prepared).rating_range)["table"]
    finally:
        split.release()
    return {r["method"].split(" (")[0]: r for r in rows}


def test_the_default_lists_beat_most_popular_and_the_rating_models_at_the_rating_models_rmse(spark, taste_data):
    """Measured on this planted set (seed 7): the default's NDCG@10 is 1.18x most popular's and 1.88x the
    rating model's. The bars (1.1x, 1.5x) fail for popularity lists (1.0x), for random lists (far below) and
    for the rating model's lists (0.63x popular's); the RMSE is the rating model's to 1e-6."""
    from cfmodel import train

    root, prepared = taste_data
    models = {}
    for objective in ("auto", "rating"):
        cfg = TrainConfig(data=prepared, output=str(root / objective), objective=objective, batch_size=256,
                          progress=False)
        train.run(cfg, overwrite=False)
        models[objective] = cfg.output
    default = _table(spark, prepared, models["auto"], ["popular"])
    rating = _table(spark, prepared, models["rating"], [])["model"]
    model, popular = default["model"], default["most popular"]
    assert model["ndcg"] >= 1.1 * popular["ndcg"], (model, popular)
    assert model["ndcg"] >= 1.5 * rating["ndcg"], (model, rating)
    assert model["rmse"] == pytest.approx(rating["rmse"], abs=1e-6)
