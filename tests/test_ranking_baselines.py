"""The ranking baselines: EASE against its closed form, implicit ALS on a hand-checked case, both in the
evaluation table."""
import numpy as np
import pytest
import torch

from cfmodel.evaluate.baselines import als_checkpoints, als_factors, fit_implicit_als, unset_checkpoint_dir
from cfmodel.evaluate.ease import ease_lists, ease_weights

pytestmark = pytest.mark.slow  # whole runs on their own data: left out of make test-fast

# Users 0-2 rated items 10 and 11; user 3 rated item 10 only; user 4 rated items 12 and 13.
RATED = [(0, 10), (0, 11), (1, 10), (1, 11), (2, 10), (2, 11), (3, 10), (4, 12), (4, 13)]


def test_ease_weights_equal_the_closed_form():
    users = np.array([0, 0, 1, 1, 2, 3, 3])
    items = np.array([0, 1, 1, 2, 0, 0, 2])
    x = np.zeros((4, 3))
    x[users, items] = 1
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(3))
    want = -p / np.diag(p)[None, :]
    np.fill_diagonal(want, 0)
    got = ease_weights(users, items, 4, 3, 2.0)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def _frames(spark):
    train = spark.createDataFrame([(u, i - 10, 5.0) for u, i in RATED], "user_idx int, item_idx int, rating float")
    users = spark.createDataFrame([(u + 100, u) for u in range(5)], "user_id int, user_idx int")
    items = spark.createDataFrame([(i, i - 10) for i in range(10, 14)], "item_id int, item_idx int")
    return train, users, items


def test_ease_and_implicit_als_recommend_what_co_occurs(spark, tmp_path):
    train, users, items = _frames(spark)
    who = spark.createDataFrame([(103,), (104,)], "user_id int")
    lists = {(r.user_id, r.rank): r.item_id for r in ease_lists(spark, train, who, users, items, 2, 0.5, 10).collect()}
    assert lists[(103, 1)] == 11  # what everyone who rated 10 also rated
    assert 10 not in {lists[(103, 1)], lists.get((103, 2))} and 12 not in (lists[(104, 1)], lists.get((104, 2)))
    assert ease_lists(spark, train, who, users, items, 2, 0.5, max_items=3) is None  # over the limit: skipped

    # Past 10 iterations ALS checkpoints its factors: without it every iteration adds to their lineage, and at
    # 25 a task's deserialisation overflowed the stack and killed the JVM. The directory goes when done.
    # Broken versions caught: no directory set (no checkpoint in the lineage), one left set or on disk.
    ours, sc = tmp_path / "ck", spark.sparkContext
    with als_checkpoints(spark, str(ours), max_iter=15) as used:
        model = fit_implicit_als(train, rank=2, reg=0.01, alpha=10.0, max_iter=15, seed=1)
        lineage = model._java_obj.userFactors().rdd().toDebugString()
        assert used == str(ours) and sc.getCheckpointDir().startswith(f"file:{ours}/")
    assert "ReliableCheckpointRDD" in lineage, lineage
    assert sc.getCheckpointDir() is None and not ours.exists()
    user_f, item_f = als_factors(model)
    u = {r.idx: np.array(r.features) for r in user_f.collect()}
    v = {r.idx: np.array(r.features) for r in item_f.collect()}
    scores = {i: float(u[3] @ v[i]) for i in (1, 2, 3)}  # user 3's unrated items
    assert max(scores, key=scores.get) == 1 and scores[1] > 0.5 > max(scores[2], scores[3])


def test_als_checkpoints_only_past_ten_iterations_and_keeps_a_users_own_directory(spark, tmp_path):
    """Broken versions caught: a directory set for a fit that never reaches a checkpoint, a user's own
    directory replaced or unset."""
    sc, ours = spark.sparkContext, tmp_path / "ck"
    with als_checkpoints(spark, str(ours), max_iter=10) as used:
        assert used is None and sc.getCheckpointDir() is None
    sc.setCheckpointDir(str(tmp_path / "users"))
    try:
        theirs = sc.getCheckpointDir()
        with als_checkpoints(spark, str(ours), max_iter=11) as used:
            assert used == theirs == sc.getCheckpointDir()
        assert sc.getCheckpointDir() == theirs and (tmp_path / "users").is_dir() and not ours.exists()
    finally:
        unset_checkpoint_dir(sc)


def test_ranking_baselines_in_the_evaluation_table(spark, prepared_dir, trained_model):
    from cfmodel.config import EvaluateConfig
    from cfmodel.evaluate.compare import evaluate_all, load_split
    from cfmodel.lists import load_inputs
    from cfmodel.storage import Storage

    cfg = EvaluateConfig(model=trained_model, data=prepared_dir, baselines=["popular", "implicit_als", "ease"],
                         implicit_als_n_factors=[4], implicit_als_regs=[0.1], implicit_als_alphas=[1.0, 10.0],
                         als_max_iter=5)
    split = load_split(spark, prepared_dir)
    table = {r["method"]: r for r in evaluate_all(spark, split, load_inputs(spark, Storage(spark), cfg), cfg,
                                                  (0.5, 5.0))["table"]}
    (als_name,) = [m for m in table if m.startswith("implicit ALS (rank 4, reg 0.1, alpha ")]
    ease, popular = table["EASE (lambda 300)"], table["most popular"]
    assert ease["rmse"] is None and table[als_name]["rmse"] is None
    # The generator's Zipf popularity decides what is rated, so popularity is strong here (as on the demo's
    # data); EASE is in the same range and spreads its lists over far more of the catalogue.
    assert 0.5 * popular["ndcg"] < ease["ndcg"] <= 1 and ease["coverage"] > popular["coverage"]
    assert 0 < table[als_name]["ndcg"] <= 1
    split.release()
    cfg.ease_max_items = 10
    table = evaluate_all(spark, load_split(spark, prepared_dir), load_inputs(spark, Storage(spark), cfg),
                         EvaluateConfig(**{**cfg.__dict__, "baselines": ["ease"]}), (0.5, 5.0))["table"]
    assert [r["method"] for r in table] == ["model (dot_bias)"]  # EASE skipped: over ease_max_items


@pytest.mark.parametrize("bad", [{"ease_lambda": 0}, {"implicit_als_n_factors": []}])
def test_bad_baseline_settings(bad):
    from cfmodel.config import EvaluateConfig
    from cfmodel.errors import ConfigError
    with pytest.raises(ConfigError):
        EvaluateConfig(**bad)
