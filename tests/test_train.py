"""Training on planted-factor data: learning, resume, checkpoints, export, NaN, lr finder."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from cfmodel.config import TrainConfig
from cfmodel.dataset import PreparedData
from cfmodel.train.loaders import InMemoryLoader, PetastormLoader
from cfmodel.train.lr_find import lr_find, plot_lr_find
from cfmodel.model import TrainedModel
from cfmodel.model.factors import read_id_map
from cfmodel.train.trainer import Trainer, TrainingDivergedError
from cfmodel.train.validation import validation_mse

from helpers import CFG, Crash, CrashingLoader, setup


def _biases_mse(prepared_dir, reg=5.0):
    """Validation MSE of the damped user + item biases (the evaluate stage's biases baseline): what a model
    reaches without any user × item interaction."""
    train = pd.read_parquet(os.path.join(prepared_dir, "train"))
    valid = pd.read_parquet(os.path.join(prepared_dir, "valid"))
    mean = train["rating"].mean()
    item = (train["rating"] - mean).groupby(train["item_idx"]).sum() / (train.groupby("item_idx").size() + reg)
    rest = train["rating"] - mean - train["item_idx"].map(item)
    user = rest.groupby(train["user_idx"]).sum() / (train.groupby("user_idx").size() + reg)
    pred = (mean + valid["user_idx"].map(user).fillna(0) + valid["item_idx"].map(item).fillna(0)).clip(0.5, 5.0)
    return float(((valid["rating"] - pred) ** 2).mean())


@pytest.mark.parametrize("name, overrides, ratio", [
    ("dot_bias", {}, 0.5),
    ("dot_bias", {"row_updates": "sparse"}, 0.5),  # SparseAdamW: lazy rows, owed decay settled each epoch
    # A concatenation MLP must learn the planted dot product from scratch: more epochs and a looser bound,
    # but far under what biases alone reach (measured 0.39; 10 epochs at wd 0.01 stayed at 0.82, which is
    # a network that learned almost no user × item interaction).
    ("embedding_net", {"hidden": [64], "dropouts": [0.0], "emb_dropout": 0.0, "wd": 0.001, "epochs": 30}, 0.55),
])
def test_training_recovers_planted_signal(prepared_dir, tmp_path, name, overrides, ratio):
    cfg = TrainConfig(**{**CFG.__dict__, "model": name, **overrides})
    model, train, valid, _ = setup(prepared_dir, cfg)
    history = Trainer(model, train, valid, cfg, str(tmp_path)).fit()
    baseline = _biases_mse(prepared_dir)
    best = min(m.valid_mse for m in history)
    assert best < ratio * baseline, (best, baseline)
    assert history[-1].train_mse < history[0].train_mse
    assert json.load(open(tmp_path / "metrics.json"))[-1]["epoch"] == cfg.epochs
    assert open(tmp_path / "metrics.csv").readline().startswith("epoch,train_mse,valid_mse,valid_rmse")


@pytest.mark.parametrize("overrides, loader, after_steps", [
    ({"model": "embedding_net", "hidden": [16], "dropouts": [0.2]}, "memory", 0),
    ({"model": "dot_bias", "row_updates": "sparse"}, "memory", 0),  # the decay ledger and lazy moments survive
    # Killed mid-epoch, reading through Petastorm, a hybrid with sparse row updates: the epoch starts again.
    ({"objective": "hybrid", "row_updates": "sparse"}, "petastorm", 20),
])
def test_resume_equals_uninterrupted(prepared_dir, tmp_path, overrides, loader, after_steps):
    """Mutants caught: a checkpoint without the optimiser's moments or decay ledger, a schedule that restarts,
    a resumed epoch that reads other rows than the uninterrupted one (any of them moves a weight)."""
    from cfmodel.train.fit import objective_for

    cfg = TrainConfig(**{**CFG.__dict__, **overrides, "schedule": "sgdr", "n_cycles": 2, "cycle_len": 1,
                         "cycle_mult": 2})

    def trainer(out, crash=False):
        model, train, valid, data = setup(prepared_dir, cfg, loader)  # a fresh process: new weights, optimiser
        train = CrashingLoader(train, 3, after_steps) if crash else train
        return Trainer(model, train, valid, cfg, str(tmp_path / out), objective=objective_for(cfg, data))

    full = trainer("full")
    full.fit()
    with pytest.raises(Crash):
        trainer("cut", crash=True).fit()
    resumed = trainer("cut")
    history = resumed.fit(resume=True)

    assert [m.epoch for m in history] == [1, 2, 3] and resumed.resumed_after == 2
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [m.valid_mse for m in history] == [m.valid_mse for m in full.history]


def test_checkpoint_round_trip(prepared_dir, tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 1})
    model, train, valid, _ = setup(prepared_dir, cfg)
    a = Trainer(model, train, valid, cfg, str(tmp_path), extra={"user_ids": torch.arange(3)})
    a.fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.equal(state["user_ids"], torch.arange(3)) and state["config"]["n_factors"] == 8
    model2, _, _, _ = setup(prepared_dir, cfg)
    b = Trainer(model2, train, valid, cfg, str(tmp_path))
    assert b.resume_from(str(tmp_path / "last.pt"))
    assert b.epoch == 1 and b.step == a.step and b.best_valid == a.best_valid
    assert validation_mse(b.model, valid, b.device) == validation_mse(a.model, valid, a.device)
    assert b.opt.state_dict()["state"][0]["exp_avg"].equal(a.opt.state_dict()["state"][0]["exp_avg"])


def test_row_updates_auto_goes_sparse_only_for_tables_large_against_the_batch():
    from cfmodel.model import ModelArgs
    from cfmodel.train.sparse_adamw import SparseAdamW
    from cfmodel.train.optim import make_optimizer

    small, large = ModelArgs("dot_bias", 700, 9000, 8).build(), ModelArgs("dot_bias", 138_000, 27_000, 8).build()
    cfg = TrainConfig(objective="rating", batch_size=1024)
    assert not isinstance(make_optimizer(small, cfg), SparseAdamW)
    assert isinstance(make_optimizer(large, cfg), SparseAdamW) and large.u_weight.sparse and large.i_bias.sparse
    assert isinstance(make_optimizer(small, TrainConfig(objective="rating", row_updates="sparse")), SparseAdamW)
    assert not isinstance(make_optimizer(large, TrainConfig(objective="rating", row_updates="dense")), SparseAdamW)
    # A hybrid's ranking head does not count: on MovieLens small's tables it stays dense, as the rating model.
    hybrid = ModelArgs("dot_bias", 700, 9000, 8, rank_factors=16).build()
    assert not isinstance(make_optimizer(hybrid, cfg), SparseAdamW)


@pytest.mark.parametrize("cap, scale", [(4, 0.25), (16, 1.0), (None, 1.0)])
@pytest.mark.parametrize("row_updates", ["dense", "sparse"])
def test_an_epoch_pays_at_most_wd_epoch_steps_of_decay(tmp_path, cap, scale, row_updates):
    """16 steps an epoch: with ``wd_epoch_steps`` 4 each pays a quarter of ``lr × wd``, so a never-rated row
    ends the epoch shrunk by (1 − lr·wd/4)^16; 16 or more, or null, leave the per-step decay as it was. The
    record that fold-in replays carries the same decay."""
    import math
    from cfmodel.model import ModelArgs
    from cfmodel.train.optim import optimizer_record

    g = torch.Generator().manual_seed(0)
    users, items = torch.randint(0, 8, (64,), generator=g), torch.randint(0, 8, (64,), generator=g)
    ratings = 1 + 4 * torch.rand(64, generator=g)
    cfg = TrainConfig(objective="rating", n_factors=4, batch_size=4, lr=0.01, wd=2.0, wd_epoch_steps=cap, epochs=1,
                      schedule="constant", row_updates=row_updates, progress=False)
    torch.manual_seed(0)
    model = ModelArgs("dot_bias", 8, 10, 4).build()  # item 9 is never rated
    before = model.i_weight.weight[9].detach().clone()
    trainer = Trainer(model, InMemoryLoader(users, items, ratings, batch_size=4, seed=1),
                      InMemoryLoader(users, items, ratings, batch_size=64, shuffle=False), cfg, str(tmp_path))
    trainer.fit()
    shrink = 1 - 0.01 * 2.0 * scale
    assert torch.allclose(trainer.model.i_weight.weight[9].detach(), before * shrink ** 16, rtol=1e-5, atol=0)
    other = 1 - 0.01 * 2.0 * (1.25 - scale)  # the other case's shrink (0.25 <-> 1): far enough to tell apart
    assert not torch.allclose(before * shrink ** 16, before * other ** 16, rtol=1e-5, atol=0)
    record = optimizer_record(cfg, trainer.opt, 16, 16)
    assert sum(piece[2] for piece in record["segments"]) == pytest.approx(16 * math.log(shrink))


def test_the_cap_scales_the_rating_tables_and_biases_decay_not_ranking_rows():
    from cfmodel.model import ModelArgs
    from cfmodel.train.optim import make_optimizer

    model = ModelArgs("dot_bias", 50, 40, 4, rank_factors=3).build()
    cfg = TrainConfig(objective="hybrid", wd=1.5, bias_wd=0.2, rank_wd=0.1, wd_epoch_steps=100)
    head = {id(p) for p in model.rank_head_parameters()}
    # 400 steps an epoch, capped at 100: the rating factors (2 tables) and the biases (user, item, item
    # ranking) pay a quarter of their decay a step, the ranking head (2 tables) all of it.
    groups = make_optimizer(model, cfg, steps_per_epoch=400).param_groups
    by_kind = {("head" if id(g["params"][0]) in head else len(g["params"])): g["weight_decay"] for g in groups}
    assert by_kind == {2: pytest.approx(0.375), 3: pytest.approx(0.05), "head": pytest.approx(0.1)}
    assert [g["weight_decay"] for g in make_optimizer(model, cfg, steps_per_epoch=100).param_groups] == [1.5, 0.2, 0.1]
    # Ranking-only objectives decay at every step, however long the epoch.
    ranking = make_optimizer(model, TrainConfig(objective="softmax", wd=0.5), steps_per_epoch=400)
    assert ranking.param_groups[0]["weight_decay"] == 0.5


def test_nan_loss_stops_with_epoch_and_step(prepared_dir, tmp_path):
    model, train, valid, _ = setup(prepared_dir)
    with torch.no_grad():
        model.u_weight.weight[:] = float("nan")
    with pytest.raises(TrainingDivergedError, match="loss is nan at epoch 1, step 1"):
        Trainer(model, train, valid, CFG, str(tmp_path)).fit()


def test_export_schema_ids_and_model_file(prepared_dir, tmp_path):
    model, train, valid, data = setup(prepared_dir)
    user_ids = read_id_map(os.path.join(prepared_dir, "users"), "user_id", "user_idx")
    item_ids = read_id_map(os.path.join(prepared_dir, "items"), "item_id", "item_idx")
    TrainedModel(model.args, model.eval(), user_ids, item_ids, {"valid_mse": 0.5}).save(str(tmp_path))
    users = pd.read_parquet(tmp_path / "user_factors")
    assert list(users.columns) == ["id", "idx", "bias", "features"]
    assert str(users["id"].dtype) == "int32" and str(users["bias"].dtype) == "float32"
    assert users["idx"].tolist() == list(range(data.n_users))
    assert users["id"].tolist() == user_ids.tolist()
    np.testing.assert_allclose(np.stack(users["features"].to_numpy()), model.u_weight.weight.detach().numpy())
    np.testing.assert_allclose(users["bias"].to_numpy(), model.u_bias.weight.detach().numpy()[:, 0])

    loaded = TrainedModel.load(str(tmp_path))
    u, i = torch.tensor([0, 1, 2]), torch.tensor([2, 1, 0])
    assert torch.equal(loaded.module(u, i), model(u, i))
    assert loaded.item_ids.tolist() == item_ids.tolist() and loaded.extra["valid_mse"] == 0.5
    assert loaded.args.n_factors == CFG.n_factors and loaded.args.name == "dot_bias"


def test_lr_finder(prepared_dir, tmp_path):
    model, train, _, _ = setup(prepared_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finding = lr_find(model, train, CFG, torch.device("cpu"), 1e-5, 10.0, 150)
    assert 20 < len(finding.lrs) <= 150
    assert finding.lrs == sorted(finding.lrs)
    assert 1e-5 <= finding.suggestion <= 1.0
    assert min(finding.losses) < finding.losses[0]  # the loss fell somewhere in the sweep
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # weights restored
    plot_lr_find(finding, str(tmp_path / "lr.png"))
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _pairs(loader, epoch):
    return [(int(u), int(i)) for users, items, _ in loader.epoch(epoch) for u, i in zip(users, items)]


def test_petastorm_loader_epochs_and_shards(prepared_dir):
    url = os.path.join(prepared_dir, "train")
    rows = PreparedData(prepared_dir).counts["train_rows"]
    loader = PetastormLoader(url, rows, batch_size=500, shuffle=True, seed=1, shuffle_buffer=2000)
    e1, e2 = _pairs(loader, 1), _pairs(loader, 2)
    truth = pd.read_parquet(url)
    assert sorted(e1) == sorted(zip(truth["user_idx"], truth["item_idx"]))
    assert len(e1) == rows and e1 != e2  # every row once, in a new order each epoch
    assert e1 == _pairs(loader, 1)  # and the same order for the same epoch
    shards = [_pairs(PetastormLoader(url, rows, 500, False, cur_shard=k, shard_count=2), 0) for k in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(e1)


def test_in_memory_loader_matches_parquet(prepared_dir):
    url = os.path.join(prepared_dir, "valid")
    loader = InMemoryLoader.from_parquet(url, batch_size=100, shuffle=True, seed=3)
    truth = pd.read_parquet(url)
    assert sorted(_pairs(loader, 0)) == sorted(zip(truth["user_idx"], truth["item_idx"]))
    assert loader.steps_per_epoch() == -(-len(truth) // 100)
    assert _pairs(loader, 0) != _pairs(loader, 1)


def test_in_memory_loader_order_is_seeded_where_the_split_is_held():
    """Each epoch is a permutation drawn on the split's device from (seed, epoch): on the CPU exactly the
    CPU generator's (so a resumed run repeats it), and ``to`` keeps every row once per epoch."""
    users, items = torch.arange(1000), torch.arange(1000) % 7
    loader = InMemoryLoader(users, items, items.float(), batch_size=300, shuffle=True, seed=5)
    assert loader.to(torch.device("cpu")) is loader
    seen = torch.cat([u for u, _, _ in loader.epoch(2)])
    assert torch.equal(seen, torch.randperm(1000, generator=torch.Generator().manual_seed(5 * 1000 + 2)))
    assert [len(u) for u, _, _ in loader.epoch(2)] == [300, 300, 300, 100]
    assert not torch.equal(seen, torch.cat([u for u, _, _ in loader.epoch(3)]))
    assert torch.equal(torch.cat([i for _, i, _ in loader.epoch(2)]), seen % 7)  # rows stay whole


class _WorseningLoader:
    """A validation loader whose ratings drift away every time it is read (validation only gets worse)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def steps_per_epoch(self):
        return self.inner.steps_per_epoch()

    def epoch(self, n):
        self.calls += 1
        for users, items, ratings in self.inner.epoch(n):
            yield users, items, ratings + 3.0 * self.calls


def test_early_stopping_after_patience(prepared_dir, tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "early_stopping": 2, "epochs": 6})
    model, train, valid, _ = setup(prepared_dir, cfg)
    history = Trainer(model, train, _WorseningLoader(valid), cfg, str(tmp_path)).fit()
    assert [m.epoch for m in history] == [1, 2, 3]  # best at 1, then two epochs without a gain
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 1
