"""Ranking benchmark: every objective beside the ranking baselines, under both protocols, in one run.

    .venv/bin/python bench/bench_ranking.py                 # needs ../shared/data/ml-latest-small-2016
    .venv/bin/python bench/bench_ranking.py --protocols random

Protocols (k = 10, lists exclude each user's training items):

- ``random``: the lesson's split (``prepare.split: random``, 20% of rows,
  seed 42), relevant = held-out rating >= 4, the evaluate stage's default.
- ``per_user``: each user's ratings split 75/25 (``prepare.split: per_user``,
  stratified per user), every held-out rating relevant
  (``evaluate.relevance_threshold: null``): the protocol of the Microsoft
  Recommenders MovieLens benchmark (there on ML-100K, so comparable in kind,
  not in value).

For each protocol the models of ``train.objective`` rating, bpr, softmax and
hybrid are trained with the defaults (``conf/local.yaml``'s train section,
objective changed only) and evaluated beside most popular, explicit ALS
(rank 10), implicit ALS (its grid, best by NDCG) and EASE (lambda 300); then
softmax once more with its settings chosen by ``cf-tune`` from a grid of as
many points as implicit ALS's, on the same split by the same NDCG (both
flattered alike). It
prints NDCG@10, P@10, R@10, MAP@10, coverage and RMSE where defined, each
method's NDCG over most popular's, fit seconds, and each objective's training
speed (ratings/s per epoch) over the rating objective's, measured in the same run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cfmodel import prepare, train, tune  # noqa: E402
from cfmodel.config import load_config  # noqa: E402
from cfmodel.dataset import PreparedData  # noqa: E402
from bench.results import table_name as results_table  # noqa: E402
from cfmodel.evaluate.compare import evaluate_all, load_split  # noqa: E402
from cfmodel.lists import load_inputs  # noqa: E402
from cfmodel.session import spark_session  # noqa: E402
from cfmodel.storage import Storage  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small-2016"
OBJECTIVES = ("rating", "bpr", "softmax", "hybrid")
PROTOCOLS = {"random": ["prepare.split=random", "prepare.valid_fraction=0.2", "evaluate.relevance_threshold=4.0"],
             "per_user": ["prepare.split=per_user", "prepare.valid_fraction=0.25",
                          "evaluate.relevance_threshold=null"]}
BASELINES = "evaluate.baselines=[popular, als, implicit_als, ease]"
# The softmax objective's search: 12 points, as many as implicit ALS's grid (rank x regParam x alpha).
TUNE_SPACE = "tune.space={n_factors: [32, 64], wd: [0.25, 0.5, 1.0], lr: [0.005, 0.02]}"


def run_protocol(spark, name: str, out: Path, tuned: bool = True, objectives=OBJECTIVES, extra=(),
                 baselines: str = BASELINES) -> list:
    """Rows of the table for one protocol (``extra``: more ``--set`` overrides; the baselines are evaluated
    beside the first objective)."""
    sets = protocol_sets(name, out) + list(extra)
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), sets)
    prepare.run(spark, cfg, overwrite=True)
    split = load_split(spark, cfg.prepare.output)
    rows, speed = [], {}
    for objective in objectives:
        cfg = load_config(str(ROOT / "conf" / "local.yaml"), sets + [
            f"train.objective={objective}", f"train.output={out}/{objective}", f"evaluate.model={out}/{objective}",
            f"evaluate.data={out}/prepared", baselines if objective == objectives[0] else "evaluate.baselines=[]"])
        trained = train.run(cfg.train, overwrite=True)
        speed[objective] = trained["ratings_per_s"]
        started = time.time()
        table = evaluate_all(spark, split, load_inputs(spark, Storage(spark), cfg.evaluate), cfg.evaluate,
                             PreparedData(cfg.prepare.output).rating_range)["table"]
        for i, row in enumerate(table):
            fit = trained["fit_seconds"] if i == 0 else row["seconds"]
            rows.append({**row, "protocol": name, "fit_s": fit,
                         "speed": speed[objective] / speed[objectives[0]] if i == 0 else None})
        print(f"[{name}] {objective}: trained in {trained['fit_seconds']} s, evaluated in "
              f"{time.time() - started:.0f} s", flush=True)
    if tuned:
        rows.append(tuned_softmax(spark, name, sets, out, split))
    split.release()
    return rows


def protocol_sets(name: str, out: Path) -> list:
    """The overrides of every run under protocol ``name``: MovieLens small prepared into ``out``, and
    trained from there in memory."""
    return [f"prepare.input={MOVIELENS / 'ratings.csv'}", f"prepare.output={out}/prepared", "spark.log_level=ERROR",
            f"train.data={out}/prepared", "train.progress=false", "train.loader=memory", *PROTOCOLS[name]]


def tuned_softmax(spark, name: str, sets: list, out: Path, split) -> dict:
    """The softmax row with its settings chosen by ``cf-tune`` on the same split, as implicit ALS's are chosen
    from its grid: as many points (12), by NDCG@10 with the protocol's relevance."""
    relevance = PROTOCOLS[name][-1].replace("evaluate.", "tune.")
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), sets + [
        "train.objective=softmax", f"train.output={out}/softmax-tuned", f"train.tuned={out}/tune",
        f"tune.data={out}/prepared", f"tune.output={out}/tune", TUNE_SPACE, relevance,
        f"evaluate.model={out}/softmax-tuned", f"evaluate.data={out}/prepared", "evaluate.baselines=[]"])
    started = time.time()
    best = tune.run(spark, cfg, overwrite=True)["best"]["params"]
    searched = time.time() - started
    trained = train.run(cfg.train, overwrite=True)
    row = evaluate_all(spark, split, load_inputs(spark, Storage(spark), cfg.evaluate), cfg.evaluate,
                       PreparedData(cfg.prepare.output).rating_range)["table"][0]
    print(f"[{name}] softmax tuned: {best} in {searched:.0f} s", flush=True)
    return {**row, "method": f"{row['method']} (cf-tune: {_short(best)})", "protocol": name,
            "fit_s": searched + trained["fit_seconds"], "speed": None}


def _short(best: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(best.items()))


def print_table(rows: list) -> None:
    """The rows as a markdown table: NDCG@10 over most popular's and EASE's, the objectives' speed."""
    popular = {r["protocol"]: r["ndcg"] for r in rows if r["method"] == "most popular"}
    ease = {r["protocol"]: r["ndcg"] for r in rows if r["method"].startswith("EASE")}
    print("\n| protocol | method | NDCG@10 | × popular | × EASE | P@10 | R@10 | MAP@10 | coverage | RMSE | fit s "
          "| speed |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        def f(key, fmt=".4f"):
            return format(r[key], fmt) if r.get(key) is not None else "—"
        vs_ease = f"{r['ndcg'] / ease[r['protocol']]:.3f}" if r["protocol"] in ease else "—"
        print(f"| {r['protocol']} | {r['method']} | {f('ndcg')} | {r['ndcg'] / popular[r['protocol']]:.2f} | "
              f"{vs_ease} | {f('precision')} | {f('recall')} | {f('map')} | {f('coverage', '.3f')} | {f('rmse')} | "
              f"{f('fit_s', '.1f')} | {f('speed', '.2f')} |")
    print("\nspeed: the objective's training ratings/s over the first objective's (per epoch, same run). Lists "
          "exclude each user's training items; k = 10.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--no-tune", action="store_true", help="skip the tuned softmax row")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES),
                        help="the first is the speed reference and is evaluated beside the baselines")
    parser.add_argument("--baselines", default=BASELINES.split("=", 1)[1], help="evaluate.baselines to run")
    parser.add_argument("--set", action="append", default=[],
                        help="a config override for every model (the table's name then ends _with_set)")
    return parser


def table_name(argv=None) -> str:
    """The results table a run with ``argv`` writes (:func:`bench.results.table_name`): ``bench_ranking`` for
    the full default run only, ``_partial`` for fewer protocols, objectives, baselines or no tune row,
    ``_with_set`` for overrides."""
    args, full = _parser().parse_args(argv), _parser().parse_args([])
    keys = ("protocols", "no_tune", "objectives", "baselines")
    partial = any(getattr(args, k) != getattr(full, k) for k in keys)
    return results_table("bench_ranking", "partial" if partial else "", bool(args.set))


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    print_table(each_protocol(args.protocols, lambda spark, name, out: run_protocol(
        spark, name, out, not args.no_tune, args.objectives, args.set, f"evaluate.baselines={args.baselines}")))
    return 0


def each_protocol(protocols, run) -> list:
    """The rows ``run(spark, protocol, out)`` gives for each protocol, on one Spark session, each protocol in
    its own temporary directory ``out``."""
    if not (MOVIELENS / "ratings.csv").exists():
        raise SystemExit(f"MovieLens small not found at {MOVIELENS}")
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), ["spark.log_level=ERROR"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp, spark_session(cfg.spark) as spark:
        for name in protocols:
            rows += run(spark, name, Path(tmp) / name)
    return rows


if __name__ == "__main__":
    from bench.results import recorded

    with recorded(table_name()):
        code = main()
    sys.exit(code)
