"""Scoring benchmark: our score path vs ALSModel.recommendForAllUsers vs a single-process floor.

    .venv/bin/python bench/bench_score.py                          # every shape, rank 32 and 64
    .venv/bin/python bench/bench_score.py --shapes 6000x4000 --ranks 32
    .venv/bin/python bench/bench_score.py --shapes 138000x27000 --repeat 3   # medians of 3

For each shape (users × items) and rank, on the same random factors, top-10:

- ours: the score job's path on Spark local[*]: collect the item factors, broadcast
  them, repartition the users, score them by mapInArrow in blocks (matmul +
  grouped top-k), write Parquet;
- ALS: an ALSModel loaded with the same factors, ``recommendForAllUsers(10)``,
  written to Parquet;
- floor: one process, no Spark: per block of users one matrix product and a top-k,
  with torch (``matmul`` + ``topk``) and with numpy (``@`` + ``argpartition``);
  ``matmul only`` is the products alone, the physical limit;
- kernel (only when asked, ``--variants ... kernel``): our ``BlockScorer`` over the
  same users in one process, no Spark, torch on every core.

The Spark variants time the same span: from factor tables already opened
(``ALSModel.load``; ``spark.read.parquet`` for ours) on a JVM that has written
and read Parquet once (ALS's model construction; a small warm-up for ours) to
the written output. Each variant runs in its own process; peak memory is that process tree's largest
summed RSS (for Spark: the driver JVM that runs the local executors, and its
Python workers). Ratios are against ours. Uses the ``dot`` form (no biases, no
sigmoid) so every variant does the same arithmetic.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memwatch import run_watched  # noqa: E402
from cfmodel.config import ScoreConfig  # noqa: E402

TOP_N = 10
BLOCK = 4096        # users per block for the single-process floors
SCORE_BLOCK = ScoreConfig().block_size


def _factors(out: Path, n_users: int, n_items: int, rank: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = out / f"factors-{n_users}x{n_items}-r{rank}"
    if (target / "_SUCCESS").exists():
        return target
    rng = np.random.default_rng(rank)
    for name, n in (("user_factors", n_users), ("item_factors", n_items)):
        w = rng.normal(0, 1 / rank ** 0.5, (n, rank)).astype(np.float32)
        feats = pa.FixedSizeListArray.from_arrays(pa.array(w.reshape(-1)), rank).cast(pa.list_(pa.float32()))
        table = pa.table({"id": pa.array(np.arange(1, n + 1, dtype=np.int32)),
                          "idx": pa.array(np.arange(n, dtype=np.int32)),
                          "bias": pa.array(np.zeros(n, np.float32)), "features": feats})
        (target / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target / name / "part-0.parquet")
    (target / "_SUCCESS").write_text("")
    return target


def _spark():
    from cfmodel.config import SparkConfig
    from cfmodel.session import get_spark

    return get_spark(SparkConfig(master="local[*]", log_level="ERROR", conf={
        "spark.driver.memory": "10g", "spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false"}))


def _warm_up(spark, out: Path) -> None:
    """Write and read a little Parquet: ALS's model construction below does as much before its clock starts."""
    warm = out.parent / f"{out.name}-warmup"
    spark.range(1000).selectExpr("cast(id as int) id", "array(cast(id as float)) features").write.mode(
        "overwrite").parquet(str(warm))
    spark.read.parquet(str(warm)).count()


def run_ours(factors: Path, out: Path, n_items: int, rank: int) -> float:
    import numpy as np
    from pyspark.sql import functions as F

    from cfmodel.lists import item_table, recommend
    from cfmodel.model import dot_head
    from cfmodel.model.topn import BlockScorer

    spark = _spark()
    _warm_up(spark, out)
    # The factor tables opened, as ALSModel.load opens them before ALS's clock starts.
    item_factors = spark.read.parquet(str(factors / "item_factors"))
    user_factors = spark.read.parquet(str(factors / "user_factors"))
    started = time.perf_counter()
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(max(SCORE_BLOCK, 8192)))
    items = item_factors.select(F.col("id").alias("item_id"), F.lit(1).alias("n_ratings"))
    # The shape is what the score job reads from the model's meta.json.
    table = item_table(item_factors, items, ScoreConfig(top_n=TOP_N), shape=(n_items, rank))
    scorer = BlockScorer(table, np.arange(0), np.zeros(0, np.float32), TOP_N, dot_head(), block_size=SCORE_BLOCK)
    users = user_factors.select(F.col("id").alias("user_id"), "features", "bias",
                                F.lit(None).cast("array<int>").alias("seen"))
    recommend(users, scorer, spark).write.mode("overwrite").parquet(str(out))
    seconds = time.perf_counter() - started
    spark.stop()
    return seconds


def run_als(factors: Path, out: Path, rank: int) -> float:
    from pyspark.ml.recommendation import ALS, ALSModel

    spark = _spark()
    model_dir = out.parent / f"{out.name}-alsmodel"
    shutil.rmtree(model_dir, ignore_errors=True)
    tiny = spark.createDataFrame([(1, 1, 1.0), (2, 2, 2.0)], "user int, item int, rating float")
    ALS(rank=rank, maxIter=1, userCol="user", itemCol="item", ratingCol="rating").fit(tiny).save(str(model_dir))
    for name in ("userFactors", "itemFactors"):
        shutil.rmtree(model_dir / name)
        src = "user_factors" if name == "userFactors" else "item_factors"
        spark.read.parquet(str(factors / src)).select("id", "features").write.parquet(str(model_dir / name))
    model = ALSModel.load(str(model_dir))
    started = time.perf_counter()
    model.recommendForAllUsers(TOP_N).write.mode("overwrite").parquet(str(out))
    seconds = time.perf_counter() - started
    spark.stop()
    return seconds


def run_floor(factors: Path, kind: str) -> float:
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    users = np.stack(pq.read_table(factors / "user_factors", columns=["features"])["features"].to_numpy(
        zero_copy_only=False)).astype(np.float32)
    items = np.stack(pq.read_table(factors / "item_factors", columns=["features"])["features"].to_numpy(
        zero_copy_only=False)).astype(np.float32)
    started = time.perf_counter()
    if kind == "torch" or kind == "matmul":
        u, i = torch.from_numpy(users), torch.from_numpy(items)
        for s in range(0, len(u), BLOCK):
            scores = u[s:s + BLOCK] @ i.T
            if kind == "torch":
                torch.topk(scores, TOP_N, dim=1)
    else:
        for s in range(0, len(users), BLOCK):
            scores = users[s:s + BLOCK] @ items.T
            part = np.argpartition(-scores, TOP_N, axis=1)[:, :TOP_N]
            top = np.take_along_axis(scores, part, axis=1)
            np.take_along_axis(part, np.argsort(-top, axis=1), axis=1)
    return time.perf_counter() - started


def run_kernel(factors: Path, n_items: int, rank: int) -> float:
    """Our block scorer alone, one process, no Spark: what ours costs beyond the Spark plumbing."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cfmodel.model import dot_head
    from cfmodel.model.topn import INPUT_SCHEMA, BlockScorer, ItemTable

    items = pq.read_table(factors / "item_factors").sort_by("idx")
    table = ItemTable(ids=items["id"].to_numpy().astype(np.int64),
                      factors=pc.list_flatten(items["features"]).to_numpy().reshape(n_items, rank),
                      bias=items["bias"].to_numpy(), candidate=np.ones(n_items, bool))
    users = pq.read_table(factors / "user_factors", columns=["id", "features", "bias"])
    users = pa.table([users["id"], users["features"], users["bias"], pa.nulls(users.num_rows, pa.list_(pa.int32()))],
                     schema=INPUT_SCHEMA)
    scorer = BlockScorer(table, np.arange(0), np.zeros(0, np.float32), TOP_N, dot_head(), block_size=SCORE_BLOCK,
                         threads=os.cpu_count())
    started = time.perf_counter()
    for batch in users.to_batches(max_chunksize=8192):
        scorer.score_batch(batch)
    return time.perf_counter() - started


def _child(args) -> None:
    factors, out = Path(args.factors), Path(args.dest)
    if args.one == "ours":
        seconds = run_ours(factors, out, args.items, args.rank)
    elif args.one == "als":
        seconds = run_als(factors, out, args.rank)
    elif args.one == "kernel":
        seconds = run_kernel(factors, args.items, args.rank)
    else:
        seconds = run_floor(factors, args.one)
    print(json.dumps({"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", default=["6000x4000", "100000x20000", "138000x27000"])
    parser.add_argument("--ranks", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--variants", nargs="*", default=["ours", "als", "torch", "matmul", "numpy"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "score"))
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per variant, interleaved (ours, ALS, ..., ours, ALS, ...); the table shows medians")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--factors", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _child(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    results = []
    for shape in args.shapes:
        n_users, n_items = (int(x) for x in shape.split("x"))
        for rank in args.ranks:
            factors = _factors(out, n_users, n_items, rank)
            runs = {variant: [] for variant in args.variants}
            for attempt in range(args.repeat):
                for variant in args.variants:
                    dest = out / f"result-{shape}-r{rank}-{variant}"
                    cmd = [sys.executable, __file__, "--one", variant, "--factors", str(factors), "--dest", str(dest),
                           "--rank", str(rank), "--items", str(n_items)]
                    res = run_watched(cmd, env=env)
                    if res.returncode != 0:
                        raise SystemExit(f"{variant} failed on {shape} r{rank}:\n{res.stderr[-4000:]}")
                    seconds = json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
                    runs[variant].append((seconds, res.peak_mib))
                    print(f"{shape} r{rank} {variant} run {attempt + 1}: {seconds:.1f}s, peak {res.peak_mib:.0f} MiB",
                          file=sys.stderr)
            row = {"shape": shape, "rank": rank}
            for variant, got in runs.items():
                row[variant] = (statistics.median(s for s, _ in got), max(m for _, m in got))
            results.append(row)

    print(f"\nscoring benchmark: top-{TOP_N} for every user, {os.cpu_count()} cores, seconds (peak MiB)"
          + (f", median of {args.repeat} runs (largest peak)" if args.repeat > 1 else ""))
    header = f"{'shape':<14} {'rank':>4} " + " ".join(f"{v:>17}" for v in args.variants)
    ratios = [v for v in ("als", "kernel", "torch", "numpy", "matmul")
              if v in args.variants and "ours" in args.variants]
    print(header + "".join(f" {v + '/ours':>11}" for v in ratios))
    for row in results:
        cells = " ".join(f"{row[v][0]:>8.1f} ({row[v][1]:>6.0f})" for v in args.variants)
        rats = "".join(f" {row[v][0] / row['ours'][0]:>11.2f}" for v in ratios)
        print(f"{row['shape']:<14} {row['rank']:>4} {cells}{rats}")


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_score"):
        main()
