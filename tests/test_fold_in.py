"""Fold-in: new users' factors solved against a trained model's fixed item factors (the maths; through the
score stage: tests/test_score_fold_in.py)."""
import numpy as np
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
    cfg = TrainConfig(objective="rating", lr=0.05, wd=0.1, epochs=8, batch_size=256)
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
