"""Fold-in against a full retrain and the fallback, for users the model never saw (MovieLens small).

    .venv/bin/python bench/bench_fold_in.py [--objective rating hybrid softmax] [--splits 3] [--reg 0.1 0.2]

Protocol, per split (seeds 42, 43, ...): 10% of the users are held out of
training entirely. A model is trained on the other users (prepare with the
lesson's random 20% validation split, then cf-train with the shipped config and
the named ``objective``). A second model is trained on the same ratings plus half
of each held-out user's ratings (their fold-in part); the other half is their
held-out part. For the held-out users, in the same run:

- fold-in: the first model, their factors solved from exactly the fold-in
  ratings the retrain trained on (those prepare put in its training split),
  by :meth:`TrainedModel.fold_in_list_solver` as the score stage does: the
  rating factors by ``adam`` (the training run's AdamW in expectation) and by
  ``ridge`` (the regularised optimum, per ``--reg``);
- retrain: the second model;
- fallback: the first model's list for an unknown user (highest movie bias),
  and for RMSE the first model with a zero user vector and the mean user bias.

Lists are top 10 excluding the user's fold-in movies; relevant: held-out
ratings of 4 or more (NDCG@10 as the evaluate stage computes it). Figures are
pooled over the splits (about 67 users each: one split is noisy). Time: the
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


def prepare(spark, frame: pd.DataFrame, work: Path, name: str) -> str:
    """The prepare output of ``frame`` under ``work``, with the default (lesson's) split."""
    from cfmodel.prepare import run

    csv = work / f"{name}.csv"
    frame.to_csv(csv, index=False)
    cfg = Config()
    cfg.prepare = PrepareConfig(input=str(csv), output=str(work / f"{name}-prepared"))
    run(spark, cfg, overwrite=True)
    return cfg.prepare.output


def train(prepared: str, name: str, objective: str) -> tuple:
    """(model, fit seconds) of the shipped train config with ``objective`` on ``prepared``."""
    from cfmodel.train import run

    shipped = load_config(str(ROOT / "conf" / "local.yaml")).train
    tcfg = TrainConfig(**{**vars(shipped), "data": prepared, "output": f"{prepared}-{name}-{objective}",
                          "objective": objective, "progress": False})
    result = run(tcfg, overwrite=True)
    return TrainedModel.load(tcfg.output), result["fit_seconds"]


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


def fold_in_users(prepared: str, held: pd.DataFrame, model: TrainedModel):
    """(user ids, their fold-in item indices, ratings, movie ids) for the held-out users: the fold-in rows
    prepare put in the retrain's training split, on the first model's movies."""
    trained_on = pd.read_parquet(f"{prepared}/train", columns=["user_id", "item_id", "rating"])
    folded = trained_on[trained_on["user_id"].isin(set(held["userId"]))].rename(
        columns={"user_id": "userId", "item_id": "movieId"})
    item_idx = {int(i): n for n, i in enumerate(model.item_ids)}
    groups = dict(list(folded[folded["movieId"].isin(item_idx)].groupby("userId")))
    users = sorted(groups)
    rated = [np.array([item_idx[i] for i in groups[u]["movieId"]]) for u in users]
    values = [groups[u]["rating"].to_numpy() for u in users]
    return users, rated, values, {u: list(g["movieId"]) for u, g in groups.items()}


def compare(first: TrainedModel, second: TrainedModel, prepared: str, held: pd.DataFrame, regs, steps: int):
    """{method: scores}, {method: fold-in seconds} and the user count, for one split and objective."""
    users, rated, values, seen = fold_in_users(prepared, held, first)
    held = held[held["userId"].isin(set(users))]
    rates = first.predicts_ratings
    out, seconds = {}, {}
    for method, reg in [("adam", regs[0])] + [("ridge", reg) for reg in regs]:
        name = "fold-in adam" if method == "adam" else f"fold-in ridge {reg:g}"
        started = time.perf_counter()
        lists = first.fold_in_list_factors(rated, values, reg, steps, method)
        seconds[name] = time.perf_counter() - started
        factors, biases = (first.fold_in_solver_unchecked(reg, steps, method=method)(rated, values) if rates
                           else (None, None))
        out[name] = scores(first, users, lists, factors, biases, seen, held)
    known = {int(u): n for n, u in enumerate(second.user_ids)}
    mine = [known[u] for u in users]
    lw, _ = second.rank_factors("user")
    rw, rb = second.factors("user") if rates else (None, None)
    out["retrain"] = scores(second, users, lw[mine], None if rw is None else rw[mine],
                            None if rb is None else rb[mine], seen, held)
    zeros = np.zeros((len(users), first.args.n_factors), np.float32)
    mean_bias = float(np.mean(first.factors("user")[1])) if rates else 0.0
    out["fallback"] = scores(first, users, np.zeros((len(users), lw.shape[1]), np.float32),
                             zeros if rates else None, np.full(len(users), mean_bias) if rates else None, seen, held)
    return out, seconds, len(users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reg", type=float, nargs="+", default=[0.1], help="one fold-in row per value")
    parser.add_argument("--newton-steps", type=int, default=3)
    parser.add_argument("--objective", nargs="+", default=["rating", "hybrid", "softmax"],
                        help="rating, hybrid, bpr or softmax")
    parser.add_argument("--splits", type=int, default=3, help="held-out user draws (seeds 42, 43, ...)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cfmodel-bench-fold-in"))
    args = parser.parse_args()
    from cfmodel.session import spark_session

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ratings = pd.read_csv(MOVIELENS)
    rows = {o: [] for o in args.objective}
    with spark_session(SparkConfig(master="local[2]", log_level="ERROR", conf={"spark.ui.enabled": "false"})) as spark:
        for split in range(args.splits):
            base, fold, held = split_users(ratings, 42 + split)
            first_data = prepare(spark, base, work, f"base{split}")
            second_data = prepare(spark, pd.concat([base, fold]), work, f"retrain{split}")
            for objective in args.objective:
                first, fit_seconds = train(first_data, "model", objective)
                second, _ = train(second_data, "model", objective)
                got, seconds, n_users = compare(first, second, second_data, held, args.reg, args.newton_steps)
                rows[objective].append((got, seconds, fit_seconds, n_users))
    report(rows, args)


def report(rows, args) -> None:
    """The table: per objective and method, NDCG@10 and RMSE pooled over splits (user-weighted)."""
    print(f"\n{args.splits} splits, 10% of users held out each; fold-in adam: the training run's AdamW in "
          f"expectation; ridge: reg as named, {args.newton_steps} Gauss-Newton steps (the rating part)")
    print(f"{'objective':<9} {'method':<16} {'NDCG@10':>8} {'x retrain':>10} {'RMSE':>8} {'vs retrain':>11} "
          f"{'per split x retrain':>20} {'% of fit':>9}")
    for objective, runs in rows.items():
        weights = np.array([n for *_, n in runs], float)

        def pooled(method, key):
            return float(np.average([got[method][key] for got, *_ in runs], weights=weights))
        retrain = {k: pooled("retrain", k) for k in ("ndcg", "rmse")}
        for method in ["retrain", *[m for m in runs[0][0] if m not in ("retrain", "fallback")], "fallback"]:
            ndcg, rmse = pooled(method, "ndcg"), pooled(method, "rmse")
            each = " ".join(f"{got[method]['ndcg'] / got['retrain']['ndcg']:.2f}" for got, *_ in runs)
            share = [100 * seconds[method] / fit for _, seconds, fit, _ in runs if method in seconds]
            cost = f"{np.mean(share):.1f}%" if share else ""
            # A ranking objective predicts no ratings: no RMSE to show.
            rmse_cells = (f"{'—':>8} {'—':>11}" if np.isnan(rmse) else
                          f"{rmse:>8.4f} {100 * (rmse / retrain['rmse'] - 1):>+10.1f}%")
            print(f"{objective:<9} {method:<16} {ndcg:>8.4f} {ndcg / retrain['ndcg']:>10.2f} {rmse_cells} "
                  f"{each:>20} {cost:>9}")
        print(f"{objective:<9} about {int(weights.mean())} users a split; training fit "
              f"{np.mean([fit for _, _, fit, _ in runs]):.2f} s")


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_fold_in"):
        main()
