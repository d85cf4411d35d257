"""Ranking objectives: negative sampling, a planted case where popularity and taste disagree, resume,
and what score and evaluate make of a model that ranks but does not predict ratings."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import Crash, CrashingLoader, setup
from cfmodel.config import Config, EvaluateConfig, ScoreConfig, TrainConfig
from cfmodel.model import ModelArgs, TrainedModel
from cfmodel.train.loaders import InMemoryLoader
from cfmodel.train.negatives import NegativeSampler, RatedPairs
from cfmodel.train.objectives import make_objective
from cfmodel.train.trainer import Trainer
from cfmodel.train.validation import validation_mse, validation_sums


def test_sampler_never_returns_a_rated_item_when_asked_not_to():
    # User 0 rated 8 of 10 items, user 1 one item.
    users = torch.tensor([0] * 8 + [1])
    items = torch.tensor(list(range(8)) + [3])
    rated = RatedPairs(users, items, 10)
    assert rated.contains(torch.tensor([0, 0, 1, 1]), torch.tensor([7, 8, 3, 4])).tolist() == [True, False,
                                                                                                  True, False]
    strict = NegativeSampler(rated, "uniform", exclude_rated=True, seed=1)
    neg, valid = strict.for_users(torch.tensor([0] * 500 + [1] * 500), 4)
    drawn = neg[valid]
    owner = torch.tensor([0] * 500 + [1] * 500)[:, None].expand_as(neg)[valid]
    assert not bool(rated.contains(owner, drawn).any())
    assert set(neg[:500][valid[:500]].tolist()) == {8, 9}
    # 8 of 10 rated: a draw still hits after the redraws with probability 0.8 ** 9 (13%), and is masked.
    assert 0.8 < float(valid[:500].float().mean()) < 0.95 and float(valid[500:].float().mean()) > 0.99
    loose = NegativeSampler(rated, "uniform", exclude_rated=False, seed=1)
    neg, valid = loose.for_users(torch.tensor([0] * 500), 4)
    assert bool(valid.all()) and len(set(neg.flatten().tolist()) & set(range(8))) == 8


def test_popularity_sampling_follows_smoothed_counts_and_is_reproducible():
    items = torch.tensor([0] * 90 + [1] * 9 + [2])
    rated = RatedPairs(torch.arange(100), items, 3)
    sampler = NegativeSampler(rated, "popularity", exclude_rated=False, seed=3)
    want = np.array([91, 10, 2], dtype=float) ** 0.75
    np.testing.assert_allclose(sampler.probs.numpy(), want / want.sum(), rtol=1e-5)
    np.testing.assert_allclose(sampler.log_q.exp().numpy(), sampler.probs.numpy(), rtol=1e-5)
    share = np.bincount(sampler.draw(20000).numpy(), minlength=3) / 20000
    np.testing.assert_allclose(share, want / want.sum(), atol=0.02)
    sampler.reseed(7)
    first = sampler.draw(50)
    sampler.reseed(7)
    assert torch.equal(first, sampler.draw(50))


def _taste_vs_popularity(seed=0):
    """Mainstream users (40-199) rate popular items 0-29 at 3-4 stars; niche users (0-39) rate about half
    of the niche items 90-99 at 5 stars, and a few popular ones at 2-3. Held out: the other niche items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(200):
        if u < 40:
            for i in rng.choice(np.arange(90, 100), 5, replace=False):
                rows.append((u, int(i), 5.0))
            for i in rng.choice(30, 3, replace=False):
                rows.append((u, int(i), float(rng.choice([2.0, 3.0]))))
        else:
            for i in rng.choice(30, 15, replace=False, p=np.linspace(2, 1, 30) / np.linspace(2, 1, 30).sum()):
                rows.append((u, int(i), float(rng.choice([3.0, 3.5, 4.0]))))
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


def _fit(frame, objective, tmp, epochs=30, **kw):
    cfg = TrainConfig(objective=objective, n_factors=8, epochs=epochs, batch_size=128, lr=0.02, progress=False,
                      **kw)
    tensors = [torch.tensor(frame[c].to_numpy()) for c in ("user", "item", "rating")]
    train = InMemoryLoader(*tensors, batch_size=cfg.batch_size, seed=1)
    valid = InMemoryLoader(*tensors, batch_size=4096, shuffle=False)
    rated = RatedPairs(tensors[0], tensors[1], 100)
    sampler = NegativeSampler(rated, cfg.sampling_method, cfg.exclude_rated, cfg.seed)
    torch.manual_seed(0)
    model = ModelArgs("dot_bias", 200, 100, 8).build()
    obj = make_objective(objective, sampler, cfg.negatives, cfg.samples, cfg.positive_threshold,
                         cfg.ranking_weight, cfg.hybrid_ranking)
    Trainer(model, train, valid, cfg, str(tmp), extra={}, objective=obj).fit()
    return TrainedModel(model.args, model.eval(), np.arange(200), np.arange(100), {"objective": objective})


def test_bpr_ranks_the_niche_cluster_first_for_its_fans_and_not_for_everyone(tmp_path):
    frame = _taste_vs_popularity()
    seen = frame.groupby("user")["item"].apply(list).to_dict()
    bpr = _fit(frame, "bpr", tmp_path / "bpr")
    rating = _fit(frame, "rating", tmp_path / "rating", epochs=15)
    niche_fans, mainstream = np.arange(40), np.arange(40, 200)

    def share_niche(model, users, n=5):
        lists = model.recommend(users, n, exclude=seen)
        return float((lists["item_id"] >= 90).mean())

    def niche_over_popular(model):
        """For the fans: the share of (unrated niche item, unrated popular item) pairs ranked niche first."""
        wins = []
        for u in niche_fans:
            scores = model.score_block([u], np.arange(100))[0]
            niche = [i for i in range(90, 100) if i not in seen[u]]
            popular = [i for i in range(30) if i not in seen[u]]
            wins.append((scores[niche][:, None] > scores[popular][None, :]).mean())
        return float(np.mean(wins))

    # For its fans, BPR ranks the niche items they have not rated yet above the popular ones (measured
    # 0.93 of the top 3 are niche items)...
    assert niche_over_popular(bpr) > 0.9 and share_niche(bpr, niche_fans, 3) > 0.8
    # ...and keeps them out of mainstream users' lists, whose taste it learned from what they chose.
    assert share_niche(bpr, mainstream) < 0.1
    # The rating model ranks by predicted stars: the niche items' five-star ratings put them in
    # mainstream users' lists too, although no mainstream user ever rated one.
    assert share_niche(rating, mainstream) > 0.5


def test_bpr_resume_equals_uninterrupted(prepared_dir, tmp_path):

    cfg = TrainConfig(n_factors=8, batch_size=256, epochs=3, objective="bpr", progress=False, schedule="sgdr",
                      n_cycles=2, cycle_len=1, cycle_mult=1)

    def fresh():
        from cfmodel.train.fit import objective_for
        model, train, valid, data = setup(prepared_dir, cfg)
        return model, train, valid, objective_for(cfg, data)

    model, train, valid, obj = fresh()
    full = Trainer(model, train, valid, cfg, str(tmp_path / "full"), objective=obj)
    full.fit()
    model, train, valid, obj = fresh()
    with pytest.raises(Crash):
        Trainer(model, CrashingLoader(train, 2), valid, cfg, str(tmp_path / "cut"), objective=obj).fit()
    model, train, valid, obj = fresh()
    resumed = Trainer(model, train, valid, cfg, str(tmp_path / "cut"), objective=obj)
    resumed.fit(resume=True)
    assert resumed.resumed_after == 1
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [m.valid_loss for m in resumed.history] == [m.valid_loss for m in full.history]


def test_the_softmax_terms_draw_the_objectives_samples_unless_set(prepared_dir):
    """``train.softmax_samples: null`` is the objective's (1024 for the hybrid's head, 512 for softmax), and
    what the loss draws. Broken versions caught: the train stage passing the null key on (a silent full
    softmax: size None), one count for both objectives, a value set in the config not reaching the loss."""
    from cfmodel.dataset import PreparedData
    from cfmodel.train.fit import objective_for

    data = PreparedData(prepared_dir)
    cases = (("softmax", {}, 512), ("hybrid", {}, 1024), ("hybrid", {"softmax_samples": 64}, 64))
    for objective, sets, size in cases:
        term = objective_for(TrainConfig(data=prepared_dir, objective=objective, **sets), data)
        assert getattr(term, "ranking", term).size == size, (objective, sets)


@pytest.mark.slow
def test_ranking_model_through_score_and_evaluate(spark, prepared_dir, tmp_path):
    """A softmax model scores and evaluates like any other; its list scores say they are not ratings and
    the evaluation reports no RMSE for it. A hybrid model predicts ratings and ranks by its head."""
    from cfmodel import score, train
    from cfmodel.evaluate.compare import evaluate_all, load_split
    from cfmodel.lists import load_inputs
    from cfmodel.storage import Storage

    for objective in ("softmax", "hybrid"):
        cfg = Config()
        cfg.train = TrainConfig(data=prepared_dir, output=str(tmp_path / objective), objective=objective,
                                n_factors=8, epochs=2, progress=False)
        result = train.run(cfg.train, overwrite=False)
        assert result["objective"] == objective and (result["valid_mse"] is None) == (objective == "softmax")
        cfg.score = ScoreConfig(model=cfg.train.output, data=prepared_dir, output=str(tmp_path / f"recs-{objective}"),
                                show_examples=0, top_n=5)
        report, _ = score.run(spark, cfg, overwrite=False)
        assert report["score"] == "ranking_score" and report["objective"] == objective
        written = spark.read.parquet(f"{cfg.score.output}/recommendations")
        assert "not a rating" in written.schema["score"].metadata["comment"]
        assert written.count() == 5 * report["users_scored"]
        ev = EvaluateConfig(model=cfg.train.output, data=prepared_dir, baselines=[])
        split = load_split(spark, prepared_dir)
        table = evaluate_all(spark, split, load_inputs(spark, Storage(spark), ev), ev, (0.5, 5.0))["table"]
        model_row = table[0]
        assert model_row["method"] == f"model (dot_bias, {objective})" and model_row["ndcg"] > 0
        assert (model_row["rmse"] is None) == (objective == "softmax")
    assert (tmp_path / "hybrid" / "rank_item_factors").exists() and not (tmp_path / "softmax" / "rank_item_factors").exists()
    meta = json.loads((tmp_path / "softmax" / "meta.json").read_text())
    assert meta["history"][0]["valid_mse"] is None and meta["history"][0]["valid_loss"] > 0


@pytest.mark.parametrize("ranking, row_updates, threshold, loader", [
    ("softmax", "dense", None, "memory"), ("bpr", "dense", None, "memory"),
    ("softmax", "sparse", None, "memory"),  # what auto picks on large tables: lazy moments, one pass per row set
    ("softmax", "sparse", 4.0, "petastorm"),  # only high ratings are positives; batches as large splits read them
])
def test_hybrid_predicts_ratings_exactly_as_the_rating_objective(prepared_dir, tmp_path, ranking, row_updates,
                                                                 threshold, loader):
    """The ranking term reads the rating factors without moving them: the rating tables of a hybrid model
    end as the rating objective's (same seed, same optimiser), and only its ranking head learns lists.
    Mutants caught: the ranking gradient leaking into the rating tables, with dense or sparse updates (the
    sparse row sets update a side's rating table and head together): BPR's shared rows not detached (case 2),
    the softmax head's rating part computed with its gradient (every softmax case, Petastorm's batches too)."""

    from cfmodel.train.fit import objective_for

    trained = {}
    for objective in ("rating", "hybrid"):
        cfg = TrainConfig(n_factors=8, batch_size=256, epochs=2, objective=objective, hybrid_ranking=ranking,
                          wd=0.05, progress=False, row_updates=row_updates, positive_threshold=threshold)
        model, train, valid, data = setup(prepared_dir, cfg, loader)
        obj = objective_for(cfg, data)
        history = Trainer(model, train, valid, cfg, str(tmp_path / objective), objective=obj).fit()
        trained[objective] = (model, history)
    untrained = setup(prepared_dir, cfg)[0].state_dict()  # the hybrid's initial weights (same seed)
    rating, hybrid = trained["rating"][0].state_dict(), trained["hybrid"][0].state_dict()
    for key in ("u_weight.weight", "i_weight.weight", "u_bias.weight", "i_bias.weight"):
        assert torch.allclose(rating[key], hybrid[key], atol=1e-6), key
    assert [m.valid_mse for m in trained["hybrid"][1]] == pytest.approx([m.valid_mse for m in trained["rating"][1]])
    for key in ("u_rank.weight", "i_rank.weight", "r_bias.weight"):  # the ranking head learned
        assert (hybrid[key] - untrained[key]).abs().max() > 1e-3, key


def test_validation_estimates_a_ranking_term_on_its_first_rows_and_sums_every_squared_error():
    torch.manual_seed(0)
    users, items = torch.randint(0, 30, (1000,)), torch.randint(0, 40, (1000,))
    ratings = torch.rand(1000) * 4.5 + 0.5
    model = ModelArgs("dot_bias", 30, 40, n_factors=4, rank_factors=3).build()
    sampler = NegativeSampler(RatedPairs(users, items, 40), "popularity", exclude_rated=False, seed=1)
    hybrid = make_objective("hybrid", sampler, 4, 16, None, 1.0, "softmax")
    loader = InMemoryLoader(users, items, ratings, 100, shuffle=False)
    total, n_loss, sq, n = validation_sums(model, hybrid, loader, torch.device("cpu"), seed=5, ranking_rows=250)
    assert (n_loss, n) == (300, 1000)  # the batch that crosses 250 rows counts whole
    assert sq / n == pytest.approx(validation_mse(model, loader, torch.device("cpu")), rel=1e-6)
    first = InMemoryLoader(users[:300], items[:300], ratings[:300], 100, shuffle=False)
    whole_total, whole_n, _, _ = validation_sums(model, hybrid, first, torch.device("cpu"), seed=5)
    assert (total, n_loss) == (pytest.approx(whole_total, rel=1e-6), whole_n)
    softmax = make_objective("softmax", sampler, 4, 16, None, 1.0, "softmax")
    total, n_loss, sq, n = validation_sums(model, softmax, loader, torch.device("cpu"), seed=5, ranking_rows=250)
    assert n_loss == 300 and math.isnan(sq)
