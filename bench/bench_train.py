"""Trainer benchmark: quality against Spark MLlib ALS on the lesson's split, and throughput.

    .venv/bin/python bench/bench_train.py                  # everything
    .venv/bin/python bench/bench_train.py --skip-throughput
    .venv/bin/python bench/bench_train.py --sizes 1000000  # throughput on 1M rows only

Table 1 (needs ../shared/data/ml-latest-small-2016): the default config and the
three models on MovieLens small with the lesson's split (random 20% validation,
seed 42), and ALS (15 iterations, coldStartStrategy drop) over a rank × regParam
grid on the same split, in the same run: validation MSE and fit wall time.

Table 2: one training epoch on 1M and 10M generated rows with the Petastorm and
the in-memory loaders (ratings/s and peak memory of the cf-train process).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memwatch import run_watched  # noqa: E402
from cfmodel.config import GenerateConfig, PrepareConfig, SparkConfig, TrainConfig, load_config  # noqa: E402
from cfmodel.config.train import for_data  # noqa: E402
from cfmodel.generate import generate  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small-2016" / "ratings.csv"
CF_TRAIN = str(Path(sys.executable).parent / "cf-train")


def _prepare(spark, ratings: str, out: Path) -> str:
    from cfmodel.config import Config
    from cfmodel.prepare import run

    if not (out / "_SUCCESS").exists():
        cfg = Config()
        cfg.prepare = PrepareConfig(input=ratings, output=str(out))
        run(spark, cfg, overwrite=True)
    return str(out)


def _train(data: str, out: Path, *overrides: str) -> dict:
    cmd = [CF_TRAIN, "--conf", str(ROOT / "conf" / "local.yaml"), "--overwrite",
           "--set", f"train.data={data}", "--set", f"train.output={out}",
           "--set", "train.progress=false", *[a for o in overrides for a in ("--set", o)]]
    result = run_watched(cmd, env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())})
    if result.returncode != 0:
        raise SystemExit(f"cf-train failed:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout[result.stdout.index("{"):])
    return {**report, "wall": result.seconds, "peak_mib": result.peak_mib}


def _als_grid(spark, data: str, ranks, regs):
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.recommendation import ALS

    train = spark.read.parquet(f"{data}/train").select("user_idx", "item_idx", "rating").cache()
    valid = spark.read.parquet(f"{data}/valid").select("user_idx", "item_idx", "rating").cache()
    n_valid = valid.count()
    train.count()
    evaluator = RegressionEvaluator(metricName="mse", labelCol="rating", predictionCol="prediction")
    rows = []
    for rank in ranks:
        for reg in regs:
            als = ALS(rank=rank, regParam=reg, maxIter=15, userCol="user_idx", itemCol="item_idx",
                      ratingCol="rating", coldStartStrategy="drop", seed=42)
            started = time.perf_counter()
            model = als.fit(train)
            fit_s = time.perf_counter() - started
            pred = model.transform(valid).cache()
            rows.append({"rank": rank, "reg": reg, "mse": evaluator.evaluate(pred), "fit_s": fit_s,
                         "scored": pred.count() / n_valid})
            pred.unpersist()
    return rows


def quality(out: Path) -> None:
    from cfmodel.session import get_spark

    if not MOVIELENS.exists():
        print(f"(skipping quality: {MOVIELENS} not found)")
        return
    spark = get_spark(SparkConfig(master="local[*]", log_level="ERROR",
                                  conf={"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "4g"}))
    data = _prepare(spark, str(MOVIELENS), out / "ml-small-prepared")
    als = _als_grid(spark, data, ranks=(10, 25, 50), regs=(0.05, 0.1, 0.2))
    spark.stop()

    defaults = load_config(str(ROOT / "conf" / "local.yaml")).train
    ours = [("default config (dot_bias)", _train(data, out / "m-default"))]
    # The weight-decay choice: coupled L2 on the batch's rows at its best wd (measured 0.05..0.2) vs AdamW.
    ours.append(("dot_bias, l2 on batch rows wd 0.1", _train(data, out / "m-l2", "train.wd_mode=l2",
                                                              "train.wd=0.1")))
    ours.append(("dot", _train(data, out / "m-dot", "train.model=dot", "train.y_range=[0,5.5]")))
    # The default objective (hybrid) needs a bilinear model for its ranking head: the net predicts ratings only.
    ours.append(("embedding_net (rating objective)", _train(data, out / "m-net", "train.model=embedding_net",
                                                             "train.objective=rating")))
    best_als = min(als, key=lambda r: r["mse"])
    mine = ours[0][1]

    print(f"\nquality on MovieLens small, lesson split (valid_fraction 0.2, seed 42), {os.cpu_count()} cores")
    # The defaults as the train stage makes them concrete for this data (objective auto, epochs and wd null).
    defaults = for_data(defaults, json.loads((Path(data) / "meta.json").read_text()))
    print(f"default: model {defaults.model}, objective {defaults.objective}, n_factors {defaults.n_factors}, "
          f"{defaults.wd_mode} wd {defaults.weight_decay}, "
          f"{defaults.schedule} lr {defaults.lr}, {defaults.run_epochs} epochs, batch {defaults.batch_size}")
    print(f"{'model':<40} {'valid MSE':>10} {'RMSE':>7} {'fit s':>7} {'rows scored':>12}")
    for name, r in ours:
        print(f"{'cfmodel ' + name:<40} {r['valid_mse']:>10.4f} {r['valid_rmse']:>7.4f} {r['fit_seconds']:>7.1f} "
              f"{'100%':>12}")
    for r in sorted(als, key=lambda r: r["mse"]):
        mark = " (best)" if r is best_als else ""
        print(f"{'ALS rank ' + str(r['rank']) + ' reg ' + str(r['reg']) + mark:<40} {r['mse']:>10.4f} "
              f"{r['mse'] ** 0.5:>7.4f} {r['fit_s']:>7.1f} {r['scored']:>11.1%}")
    print(f"\nours / best ALS: MSE ratio {mine['valid_mse'] / best_als['mse']:.3f}, "
          f"fit time ratio {mine['fit_seconds'] / best_als['fit_s']:.2f} (fit s: our training loop with its "
          f"per-epoch validation; ALS.fit() alone)")
    print(f"whole grid of {len(als)} ALS fits: {sum(r['fit_s'] for r in als):.1f} s; our default cf-train process "
          f"end to end (start, read, train, export): {mine['wall']:.1f} s")


def throughput(out: Path, sizes) -> None:
    from cfmodel.session import get_spark

    spark = get_spark(SparkConfig(master="local[*]", log_level="ERROR",
                                  conf={"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "6g"}))
    datasets = []
    for n in sizes:
        raw = out / f"gen-{n}"
        if not (raw / "ratings.csv").exists():
            generate(GenerateConfig(n_users=max(100, n // 145), n_items=max(200, n // 740), n_ratings=n, seed=1),
                     str(raw))
        datasets.append((n, _prepare(spark, str(raw / "ratings.csv"), out / f"train-prepared-{n}")))
    spark.stop()
    print(f"\ntraining throughput, one epoch, dot_bias, batch {TrainConfig().batch_size}, {os.cpu_count()} cores CPU")
    print(f"{'rows':>12} {'loader':>10} {'ratings/s':>11} {'epoch wall s':>13} {'peak MiB':>9}")
    for n, data in datasets:
        for loader in ("petastorm", "memory"):
            r = _train(data, out / f"tp-{n}-{loader}", f"train.loader={loader}", "train.epochs=1")
            print(f"{n:>12,} {loader:>10} {r['ratings_per_s']:>11,} {r['wall']:>13.1f} {r['peak_mib']:>9,.0f}",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_quality:
        quality(out)
    if not args.skip_throughput:
        throughput(out, args.sizes)


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_train"):
        main()
