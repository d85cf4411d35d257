"""Fold-in against a full retrain and the fallback, for users the model never saw (MovieLens small).

    .venv/bin/python bench/bench_fold_in.py [--reg 0.1 0.2] [--newton-steps 3]

Protocol: 10% of the users (seed 42) are held out of training entirely. A
model is trained on the other users (prepare with the lesson's random 20%
validation split, then cf-train with the shipped config and ``objective:
rating``). A second model is trained on the same ratings plus half of each
held-out user's ratings (their fold-in part); the other half is their held-out
part. For the held-out users, in the same run:

- fold-in: the first model, their factors solved from exactly the fold-in
  ratings the retrain trained on (those prepare put in its training split);
- retrain: the second model;
- fallback: the first model's list for an unknown user (highest movie bias),
  and for RMSE the first model with a zero user vector and the mean user bias.

Lists are top 10 excluding the user's fold-in movies; relevant: held-out
ratings of 4 or more (NDCG@10 as the evaluate stage computes it). Time: the
fold-in of every held-out user against the first model's training fit.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cfmodel.config import Config, PrepareConfig, SparkConfig, TrainConfig, load_config  # noqa: E402
from cfmodel.model import TrainedModel  # noqa: E402
from cfmodel.tune.search import ndcg_at_k  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small-2016" / "ratings.csv"


def split_users(ratings: pd.DataFrame, seed: int = 42):
    """(ratings of the training users, fold-in part, held-out part) with 10% of users held out, half and half."""
    rng = np.random.default_rng(seed)
    users = ratings["userId"].unique()
    held = set(rng.choice(users, size=len(users) // 10, replace=False).tolist())
    new = ratings[ratings["userId"].isin(held)]
    fold = new.sample(frac=0.5, random_state=seed)
    return ratings[~ratings["userId"].isin(held)], fold, new.drop(fold.index)


def prepare_and_train(spark, frame: pd.DataFrame, work: Path, name: str, objective: str) -> tuple:
    from cfmodel.prepare import run as prepare
    from cfmodel.train import run as train

    csv = work / f"{name}.csv"
    frame.to_csv(csv, index=False)
    cfg = Config()
    cfg.prepare = PrepareConfig(input=str(csv), output=str(work / f"{name}-prepared"))
    prepare(spark, cfg, overwrite=True)
    shipped = load_config(str(ROOT / "conf" / "local.yaml")).train
    tcfg = TrainConfig(**{**vars(shipped), "data": cfg.prepare.output, "output": str(work / f"{name}-model"),
                          "objective": objective, "progress": False})
    result = train(tcfg, overwrite=True)
    return TrainedModel.load(tcfg.output), cfg.prepare.output, result["fit_seconds"]


def scores(model: TrainedModel, users, lists, factors, biases, seen, held: pd.DataFrame) -> dict:
    """RMSE on the held-out ratings (rating ``factors`` and ``biases``; None: no RMSE) and NDCG@10 of the lists
    the ``lists`` factors make, without ``seen``, for user ids ``users``."""
    item_idx = {int(i): n for n, i in enumerate(model.item_ids)}
    rows = held[held["movieId"].isin(item_idx)]
    pos = {u: n for n, u in enumerate(users)}
    rmse = float("nan")
    if factors is not None:
        pick = [pos[u] for u in rows["userId"]]
        pred = model.predict_factors(factors[pick], biases[pick], [item_idx[i] for i in rows["movieId"]])
        rmse = float(np.sqrt(np.mean((pred - rows["rating"].to_numpy()) ** 2)))
    weight, bias = model.rank_factors("item")
    raw = lists @ weight.T + (0 if bias is None else bias[None, :])
    for n, u in enumerate(users):
        raw[n, [item_idx[i] for i in seen.get(u, []) if i in item_idx]] = -np.inf
    top = np.argsort(-raw, axis=1)[:, :10]
    relevant = {u: {item_idx[i] for i in g["movieId"] if i in item_idx}
                for u, g in held[held["rating"] >= 4].groupby("userId")}
    relevant = {u: s for u, s in relevant.items() if s}
    return {"rmse": rmse, "ndcg": ndcg_at_k({u: list(top[pos[u]]) for u in users}, relevant, 10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reg", type=float, nargs="+", default=[0.1], help="one fold-in row per value")
    parser.add_argument("--newton-steps", type=int, default=3)
    parser.add_argument("--objective", default="rating", help="rating, hybrid, bpr or softmax")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cfmodel-bench-fold-in"))
    args = parser.parse_args()
    from cfmodel.session import spark_session

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base, fold, held = split_users(pd.read_csv(MOVIELENS))
    with spark_session(SparkConfig(master="local[2]", log_level="ERROR", conf={"spark.ui.enabled": "false"})) as spark:
        first, _, fit_seconds = prepare_and_train(spark, base, work, "base", args.objective)
        second, prepared, _ = prepare_and_train(spark, pd.concat([base, fold]), work, "retrain", args.objective)
    # Fold in exactly the ratings the retrain trained on: the fold-in rows prepare put in its training split.
    trained_on = pd.read_parquet(f"{prepared}/train", columns=["user_id", "item_id", "rating"])
    folded = trained_on[trained_on["user_id"].isin(set(held["userId"]))].rename(
        columns={"user_id": "userId", "item_id": "movieId"})
    item_idx = {int(i): n for n, i in enumerate(first.item_ids)}
    folded = folded[folded["movieId"].isin(item_idx)]
    groups = dict(list(folded.groupby("userId")))
    users = sorted(groups)
    seen = {u: list(g["movieId"]) for u, g in groups.items()}
    held = held[held["userId"].isin(set(users))]
    folds = {}
    rates = args.objective in ("rating", "hybrid")
    rated = [np.array([item_idx[i] for i in groups[u]["movieId"]]) for u in users]
    values = [groups[u]["rating"].to_numpy() for u in users]
    for reg in args.reg:
        started = time.perf_counter()
        lists = first.fold_in_list_factors(rated, values, reg, args.newton_steps, rank_reg=reg)
        factors, biases = (first.fold_in_solver_unchecked(reg, args.newton_steps)(rated, values) if rates
                           else (None, None))
        fold_seconds = time.perf_counter() - started
        folds[f"fold-in {reg:g}"] = scores(first, users, lists, factors, biases, seen, held)
    known = {int(u): n for n, u in enumerate(second.user_ids)}
    mine = [known[u] for u in users]
    lw, _ = second.rank_factors("user")
    rw, rb = ((second.module.u_weight.weight.detach().numpy(), second.module.u_bias.weight.detach().numpy()[:, 0])
              if rates else (None, None))
    retrain = scores(second, users, lw[mine], None if rw is None else rw[mine], None if rb is None else rb[mine],
                     seen, held)
    zeros = np.zeros((len(users), first.module.u_weight.weight.shape[1]), np.float32)
    mean_bias = float(first.module.u_bias.weight.detach().mean()) if rates else 0.0
    fallback = scores(first, users, np.zeros((len(users), lw.shape[1]), np.float32), zeros if rates else None,
                      np.full(len(users), mean_bias) if rates else None, seen, held)
    print(f"\n{len(users)} held-out users, {len(folded):,} fold-in ratings, {len(held):,} held-out ratings "
          f"(fold-in: reg as named, {args.newton_steps} Gauss-Newton steps)")
    print(f"{'method':<16} {'NDCG@10':>8} {'x retrain':>10} {'RMSE':>8} {'vs retrain':>11}")
    for name, got in [("retrain", retrain), *folds.items(), ("fallback", fallback)]:
        print(f"{name:<16} {got['ndcg']:>8.4f} {got['ndcg'] / retrain['ndcg']:>10.2f} {got['rmse']:>8.4f} "
              f"{100 * (got['rmse'] / retrain['rmse'] - 1):>+10.1f}%")
    print(f"fold-in of {len(users)} users: {fold_seconds:.3f} s = {100 * fold_seconds / fit_seconds:.2f}% of the "
          f"first model's training fit ({fit_seconds:.1f} s)")


if __name__ == "__main__":
    main()
