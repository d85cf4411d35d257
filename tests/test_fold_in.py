"""Fold-in: new users' factors solved against a trained model's fixed item factors."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cfmodel.errors import CfError
from cfmodel.model import ModelArgs, TrainedModel


def _model(name="dot_bias", n_items=300, k=5):
    torch.manual_seed(0)
    args = ModelArgs(name, 10, n_items, k, [0.0, 5.5], [10], [0.5], 0.05)
    module = args.build()
    if name != "embedding_net":
        with torch.no_grad():
            module.i_weight.weight.copy_(torch.randn(n_items, k) * 0.6)
            if name == "dot_bias":
                module.i_bias.weight.copy_(torch.randn(n_items, 1) * 0.3)
    return TrainedModel(args, module.eval(), np.arange(10), np.arange(n_items), {"objective": "rating"})


def _planted(model, users=150, per_user=40, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    k = model.args.n_factors
    p, b = rng.normal(0, 0.6, (users, k)), rng.normal(0, 0.3, users)
    items, ratings = [], []
    for u in range(users):
        it = rng.choice(model.args.n_items, per_user, replace=False)
        clean = model.predict_factors(np.repeat(p[u:u + 1], per_user, 0), np.repeat(b[u], per_user), it)
        items.append(it)
        ratings.append(clean + rng.normal(0, noise, per_user))
    return p, b, items, ratings


@pytest.mark.parametrize("steps", [0, 3])
def test_folded_users_recover_the_planted_factors(steps):
    model = _model()
    p, b, items, ratings = _planted(model)
    factors, biases = model.fold_in_users(items, ratings, reg=0.05, newton_steps=steps)
    assert np.corrcoef(factors.ravel(), p.ravel())[0, 1] > 0.95
    assert np.corrcoef(biases, b)[0, 1] > 0.95
    # Their predictions of the ratings they gave are close to the noise floor (0.3² = 0.09).
    errors = [np.mean((model.predict_factors(np.repeat(factors[u:u + 1], len(i), 0), np.repeat(biases[u], len(i)), i)
                       - r) ** 2) for u, (i, r) in enumerate(zip(items, ratings))]
    assert np.mean(errors) < (0.1 if steps else 0.11)


def test_the_gauss_newton_steps_fit_the_training_loss_better_than_the_ridge_alone():
    model = _model()
    _, _, items, ratings = _planted(model, noise=0.6)
    loss = []
    for steps in (0, 3):
        f, b = model.fold_in_users(items, ratings, reg=0.05, newton_steps=steps)
        loss.append(np.mean([np.mean((model.predict_factors(np.repeat(f[u:u + 1], len(i), 0), np.repeat(b[u], len(i)), i)
                                      - r) ** 2) for u, (i, r) in enumerate(zip(items, ratings))]))
    assert loss[1] < loss[0]


@pytest.mark.parametrize("method", ["ridge", "adam"])
def test_never_nan_even_for_one_rating_the_range_ends_or_none(method):
    model = _model()
    model.extra["optimizer"] = _record([0.01] * 50, 0.5, 256, 30, lazy=True)
    items = [np.array([3]), np.array([1, 2, 3]), np.array([], dtype=np.int64)]
    ratings = [np.array([5.0]), np.array([0.5, 5.5, 0.0]), np.array([])]
    factors, biases = model.fold_in_users(items, ratings, method=method)
    assert np.isfinite(factors).all() and np.isfinite(biases).all()
    assert np.allclose(factors[2], 0) and biases[2] == 0  # no ratings: the prior


def test_a_model_without_user_biases_gets_none_and_a_net_is_refused():
    model = _model("dot")
    p, _, items, ratings = _planted(model)
    _, biases = model.fold_in_users(items, ratings)
    assert np.abs(biases).max() < 1e-6
    with pytest.raises(CfError, match="fold-in needs a dot-product model"):
        _model("embedding_net").fold_in_users(items, ratings)


@pytest.fixture(scope="module")
def hybrid_model(prepared_dir, tmp_path_factory):
    """The shipped objective: a dot_bias model with a softmax ranking head, trained by the train stage."""
    from cfmodel.config import TrainConfig
    from cfmodel.train import run

    out = str(tmp_path_factory.mktemp("hybrid") / "model")
    run(TrainConfig(data=prepared_dir, output=out, n_factors=8, epochs=6, wd=0.5, objective="hybrid",
                    progress=False), overwrite=False)
    return out


@pytest.mark.parametrize("which", ["trained_model", "hybrid_model"])
def test_score_folds_in_new_users_from_newer_ratings(spark, prepared_dir, which, request, tmp_path):
    from cfmodel.config import load_config
    from cfmodel.score import run as score

    trained_model = request.getfixturevalue(which)
    train = pd.read_parquet(f"{prepared_dir}/train", columns=["user_id", "item_id", "rating", "timestamp"])
    twin = int(train["user_id"].value_counts().index[0])  # the most active user, re-joined as a new one
    mine = train[train["user_id"] == twin].assign(user_id=900001)
    few = train[train["user_id"] == twin].head(2).assign(user_id=900002)  # under fold_in_min_ratings
    rows = pd.concat([mine, few]).rename(columns={"user_id": "userId", "item_id": "movieId"})
    csv = tmp_path / "newer.csv"
    rows.to_csv(csv, index=False)
    with open(csv, "a") as fh:
        fh.write("900001,notanid,4.0,1\n")  # dropped by prepare's rules (1 row of many: under the gate)
    cfg = load_config(None, [f"score.model={trained_model}", f"score.data={prepared_dir}", f"score.output={tmp_path}/recs",
                             f"score.ratings={csv}", "score.titles=null", "score.show_examples=0",
                             "score.formats=[parquet]"])
    report, _ = score(spark, cfg, overwrite=False)
    assert report["folded_in_users"] == 1 and report["fallback_users"] == 1
    assert report["model_users"] == report["users_scored"] - 2
    recs = pd.read_parquet(tmp_path / "recs" / "recommendations")
    folded, fallback = recs[recs["user_id"] == 900001], recs[recs["user_id"] == 900002]
    assert set(folded["source"]) == {"folded_in"} and set(fallback["source"]) == {"fallback"}
    assert len(folded) == 10 and np.isfinite(folded["score"]).all()
    assert not set(folded["item_id"]) & set(mine["item_id"])  # never a movie they rated
    assert not set(fallback["item_id"]) & set(few["item_id"])
    # Folded in from the same ratings, the new user's list is much like their twin's, trained one.
    twin_list = set(recs[recs["user_id"] == twin]["item_id"])
    assert len(twin_list & set(folded["item_id"])) >= 5, (sorted(twin_list), sorted(folded["item_id"]))
    factors = pd.read_parquet(tmp_path / "recs" / "folded_user_factors")
    model = TrainedModel.load(trained_model)
    width = model.rank_factors("user")[0].shape[1]  # a hybrid's: rating + head
    assert factors["id"].tolist() == [900001] and len(factors["features"].iloc[0]) == width
    # The train stage recorded its optimiser's run up to the exported (best) epoch: fold-in replays it.
    record, meta = model.extra["optimizer"], json.loads((Path(trained_model) / "meta.json").read_text())
    assert model.fold_in_method() == "adam"
    assert sum(s[0] for s in record["segments"]) == meta["best_epoch"] * record["steps_per_epoch"]


def test_score_refreshes_users_it_knows_from_their_history_and_newer_ratings_when_asked(
        spark, prepared_dir, trained_model, tmp_path):
    from cfmodel.config import load_config
    from cfmodel.score import run as score

    train = pd.read_parquet(f"{prepared_dir}/train", columns=["user_id", "item_id", "rating", "timestamp"])
    user = int(train["user_id"].value_counts().index[0])
    # Three newer ratings (under fold_in_min_ratings alone): with their history the user has plenty.
    newer = train[train["user_id"] == user].head(3).rename(columns={"user_id": "userId", "item_id": "movieId"})
    csv = tmp_path / "newer.csv"
    newer.to_csv(csv, index=False)
    sets = [f"score.model={trained_model}", f"score.data={prepared_dir}", f"score.ratings={csv}",
            "score.titles=null", "score.show_examples=0", "score.formats=[parquet]"]
    lists = {}
    for refresh in (False, True):
        report, _ = score(spark, load_config(None, sets + [f"score.output={tmp_path}/{refresh}",
                                                           f"score.fold_in_refresh={str(refresh).lower()}"]),
                          overwrite=False)
        recs = pd.read_parquet(tmp_path / str(refresh) / "recommendations")
        lists[refresh] = recs[recs["user_id"] == user]
        assert report["refreshed_users"] == report["folded_in_users"] == int(refresh)
    assert set(lists[False]["source"]) == {"model"} and set(lists[True]["source"]) == {"folded_in"}
    # Solved afresh from the ratings it was trained on, the user's list stays much like the trained one.
    assert len(set(lists[True]["item_id"]) & set(lists[False]["item_id"])) >= 5
    assert not set(lists[True]["item_id"]) & set(train[train["user_id"] == user]["item_id"])


@pytest.mark.parametrize("which", ["trained_model", "hybrid_model"])
def test_score_folds_in_a_new_movie_that_then_appears_in_lists(spark, prepared_dir, which, request, tmp_path):
    from cfmodel.config import load_config
    from cfmodel.score import run as score

    trained_model = request.getfixturevalue(which)
    every = pd.concat([pd.read_parquet(f"{prepared_dir}/{split}", columns=["user_id", "item_id", "rating", "timestamp"])
                       for split in ("train", "valid")])
    base = {"score.model": trained_model, "score.data": prepared_dir, "score.titles": "null",
            "score.show_examples": "0", "score.formats": "[parquet]"}
    sets = [f"{k}={v}" for k, v in base.items()]
    before, _ = score(spark, load_config(None, sets + [f"score.output={tmp_path}/before"]), overwrite=False)
    lists = pd.read_parquet(tmp_path / "before" / "recommendations")
    # The movie most often recommended, re-released under a new id and rated as its raters rated it; the
    # newer ratings span the whole history (a ranking model weighs a new movie's raters against every
    # user's ratings in the same period).
    hit = int(lists["item_id"].value_counts().index[0])
    clone = every[every["item_id"] == hit].assign(item_id=999999)
    csv = tmp_path / "newer.csv"
    pd.concat([every, clone]).rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(csv, index=False)
    report, _ = score(spark, load_config(None, sets + [f"score.output={tmp_path}/after", f"score.ratings={csv}"]),
                      overwrite=False)
    assert report["folded_in_items"] == 1 and report["folded_in_users"] == 0
    after = pd.read_parquet(tmp_path / "after" / "recommendations")
    got = set(after[after["item_id"] == 999999]["user_id"])
    raters = set(clone["user_id"])
    wanted = set(lists[lists["item_id"] == hit]["user_id"]) - raters
    # Folded from the same ratings as the movie it copies, it is recommended to many of the same users and
    # seldom to others (with its users fixed a copy moves less than the original did beside them in
    # training: on this short run a rating model's copy scores about 0.1 lower, so it takes fewer slots) ...
    assert len(got) >= 0.25 * len(wanted) and len(got & wanted) >= 0.8 * len(got), (len(got & wanted), len(got),
                                                                                      len(wanted))
    # ... and never to a user who rated it.
    assert not got & raters
    assert np.isfinite(after["score"]).all()


def test_ranking_models_fold_in_their_list_factors():
    # A hybrid: rating factors from the ratings, the ranking head's from a softmax over the rated items.
    torch.manual_seed(0)
    args = ModelArgs("dot_bias", 10, 300, 5, [0.0, 5.5], [10], [0.5], 0.05, rank_factors=3)
    module = args.build()
    with torch.no_grad():
        for table in (module.i_weight, module.i_rank):
            table.weight.copy_(torch.randn_like(table.weight))
    model = TrainedModel(args, module.eval(), np.arange(10), np.arange(300), {"objective": "hybrid"})
    weight, bias = model.rank_factors("item")
    rng = np.random.default_rng(1)
    # Users who rate the items a planted ranking vector scores highest.
    planted = rng.normal(0, 1, (40, 8))
    items = [np.argsort(-(weight @ p + bias))[:25] for p in planted]
    ratings = [np.full(25, 4.5) for _ in items]
    lists = model.fold_in_list_factors(items, ratings)
    assert lists.shape == (40, 8) and np.isfinite(lists).all()
    top = [set(np.argsort(-(weight @ x + bias))[:25]) for x in lists]
    overlap = np.mean([len(t & set(i)) / 25 for t, i in zip(top, items)])
    assert overlap > 0.3  # 3.6x chance (25 / 300): only the head's 3 factors learn the ranking
    # A softmax model: its factors are ranking factors, folded in whole.
    plain = ModelArgs("dot_bias", 10, 300, 8, [0.0, 5.5], [10], [0.5], 0.05).build()
    with torch.no_grad():
        plain.i_weight.weight.copy_(torch.randn_like(plain.i_weight.weight))
    ranker = TrainedModel(plain.args, plain.eval(), np.arange(10), np.arange(300), {"objective": "softmax"})
    weight, bias = ranker.rank_factors("item")
    items = [np.argsort(-(weight @ p + bias))[:25] for p in planted]
    lists = ranker.fold_in_list_factors(items, ratings)
    top = [set(np.argsort(-(weight @ x + bias))[:25]) for x in lists]
    assert np.mean([len(t & set(i)) / 25 for t, i in zip(top, items)]) > 0.6


def test_a_ranking_model_folds_in_a_new_item_like_the_one_its_raters_chose():
    """A softmax model's new item, rated by the users most likely to pick a known one, scores users as that
    one does: Newton steps on its terms in every user's softmax (estimated on a user sample)."""
    torch.manual_seed(0)
    args = ModelArgs("dot_bias", 2000, 300, 6, [0.0, 5.5], [10], [0.5], 0.05)
    module = args.build()
    with torch.no_grad():
        module.u_weight.weight.copy_(torch.randn(2000, 6))
        module.i_weight.weight.copy_(torch.randn(300, 6) * 0.5)
    model = TrainedModel(args, module.eval(), np.arange(2000), np.arange(300), {"objective": "softmax"})
    users, _ = model.rank_factors("user")
    items, bias = model.rank_factors("item")
    counts = np.full(2000, 50)
    rng = np.random.default_rng(0)
    logits = users @ items.T + bias
    chosen = np.exp(logits - logits.max(1, keepdims=True))
    chosen /= chosen.sum(1, keepdims=True)
    targets = [7, 42, 199]
    # Each user picks each target as often as the model says (50 picks each): who rated the clone.
    raters = [np.nonzero(rng.poisson(50 * chosen[:, j]))[0] for j in targets]
    factors, biases = model.fold_in_item_solver(counts, reg=0.01, sample_size=1000)(raters, [np.ones(len(r)) for r in raters])
    assert np.isfinite(factors).all() and np.isfinite(biases).all()
    for n, j in enumerate(targets):
        assert np.corrcoef(users @ factors[n] + biases[n], logits[:, j])[0, 1] > 0.9, j


def _record(lrs, wd, batch, per_epoch, lazy):
    """An optimiser record of one segment per step (no compression)."""
    return {"batch_size": batch, "steps_per_epoch": per_epoch, "betas": [0.9, 0.999], "eps": 1e-8, "lazy": lazy,
            "segments": [[1, lr, float(np.log1p(-lr * wd)), 0.0] for lr in lrs]}


@pytest.mark.parametrize("lazy", [False, True])
def test_adam_fold_in_is_adamw_exactly_when_every_step_holds_every_rating(lazy):
    """One step an epoch: every step's gradient is the whole loss's, so the expectation is the run itself."""
    model = _model(n_items=50)
    _, _, items, ratings = _planted(model, users=6, per_user=12)
    lrs, wd, batch = list(np.linspace(0.002, 0.05, 30)) + list(np.linspace(0.05, 0.001, 30)), 0.5, 64
    model.extra["optimizer"] = _record(lrs, wd, batch, 1, lazy)
    got, got_bias = model.fold_in_users(items, ratings, method="adam")
    p = torch.nn.Parameter(torch.zeros(6, 5, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = torch.optim.AdamW([{"params": [p], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}], lr=lrs[0])
    rows = torch.as_tensor(np.concatenate([np.full(len(i), u) for u, i in enumerate(items)]))
    item = model.module.rows("item", torch.as_tensor(np.concatenate(items)))
    target = torch.as_tensor(np.concatenate(ratings))
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        pred = model.module.score_pairs(p[rows], item[0].detach().double(), b[rows], item[1].detach().double())
        (((pred - target) ** 2).sum() / batch).backward()
        opt.step()
    assert np.allclose(got, p.detach().numpy(), atol=1e-5) and np.allclose(got_bias, b.detach().numpy(), atol=1e-5)


def test_adam_fold_in_recovers_planted_users_and_shrinks_the_sparse_ones_more():
    from cfmodel.config import TrainConfig
    from cfmodel.train.optim import optimizer_record

    model = _model()
    p, b, items, ratings = _planted(model, users=150, per_user=40)
    cfg = TrainConfig(lr=0.05, wd=0.1, epochs=8, batch_size=256)
    probe = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    model.extra["optimizer"] = optimizer_record(cfg, probe, 20, 8 * 20)
    assert len(model.extra["optimizer"]["segments"]) == 64
    assert sum(s[0] for s in model.extra["optimizer"]["segments"]) == 160
    factors, biases = model.fold_in_users(items, ratings)  # auto: the model records its optimiser
    assert np.corrcoef(factors.ravel(), p.ravel())[0, 1] > 0.9 and np.corrcoef(biases, b)[0, 1] > 0.9
    # The same users with 4 ratings each: Adam moves a row that few batches touch much less.
    few, _ = model.fold_in_users([i[:4] for i in items], [r[:4] for r in ratings])
    assert np.linalg.norm(few, axis=1).mean() < 0.7 * np.linalg.norm(factors, axis=1).mean()
    ridge, _ = model.fold_in_users([i[:4] for i in items], [r[:4] for r in ratings], method="ridge")
    assert np.linalg.norm(few, axis=1).mean() < np.linalg.norm(ridge, axis=1).mean()
    with pytest.raises(CfError, match="fold-in method"):
        model.fold_in_users(items, ratings, method="sgd")


@pytest.mark.parametrize("padded", [True, False])
def test_rows_solved_in_small_chunks_equal_one_batch(padded):
    """A partition's rows are solved in length-sorted runs under a memory budget, returned in their order."""
    from cfmodel.model.fold_in import fold_in, in_chunks

    model = _model()
    _, _, items, ratings = _planted(model, users=30, per_user=20)
    items = [i[:n] for n, i in zip(np.random.default_rng(0).integers(1, 21, 30), items)]
    ratings = [r[:len(i)] for i, r in zip(items, ratings)]
    q, c = model.factors("item")
    whole = fold_in(q, c, (0.0, 5.5), items, ratings, reg=0.1)
    chunked = in_chunks(lambda i, r: fold_in(q, c, (0.0, 5.5), i, r, reg=0.1), items, ratings, width=6,
                        padded=padded, budget=200)
    assert np.allclose(whole[0], chunked[0], atol=1e-5) and np.allclose(whole[1], chunked[1], atol=1e-5)
