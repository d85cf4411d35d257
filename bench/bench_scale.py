"""MovieLens-20M scale on one machine: the pipeline on 20M ratings in one file and in many, the trainer
alone at that shape, and ALS's fit for scale.

    .venv/bin/python bench/bench_scale.py                # make bench-scale
    .venv/bin/python bench/bench_scale.py --ratings 2000000 --skip-als

Planted ratings of the ML-20M shape (138,000 users, 27,000 movies; ``cf-generate``)
are written once as **one** CSV file (557 MB at 20M ratings) and once split
into ``--files`` files, under ``--work`` (kept between runs). For each layout
``cf-pipeline`` with ``pipeline.stages: [prepare, train, score]`` runs with ``conf/local.yaml`` and
one training epoch, watched from outside: each stage's seconds (the run's
manifest), its rows/s, and the peak memory of the whole process tree (driver
JVM, Python driver and workers; summed PSS, which counts a page shared by forked
workers once, beside the summed RSS, which counts it in each) while the stage ran; then the trainer
alone on the prepared split (``cf-train``, one epoch, each loader; the shipped
objective and the lesson's ``rating``) and Spark
MLlib ALS's fit on the same training split (rank 50, ``--als-iter``
iterations), for scale, with its validation RMSE beside the train stage's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memwatch import run_watched, tree_memory  # noqa: E402
from cfmodel.config import GenerateConfig  # noqa: E402
from cfmodel.generate import generate  # noqa: E402

BIN = Path(sys.executable).parent


def inputs(work: Path, ratings: int, users: int, items: int, files: int) -> dict:
    """{layout: path}: the planted ratings as one CSV, and the same rows split into ``files`` CSVs."""
    one = work / f"one-{ratings}"
    if not (one / "ratings.csv").exists():
        generate(GenerateConfig(n_ratings=ratings, n_users=users, n_items=items, seed=42), str(one))
    many = work / f"many-{ratings}-{files}"
    if not (many / "_done").exists():
        many.mkdir(parents=True, exist_ok=True)
        with open(one / "ratings.csv", "rb") as src:
            header = src.readline()
            outs = [open(many / f"part-{k:03d}.csv", "wb") for k in range(files)]
            for out in outs:
                out.write(header)
            for n, line in enumerate(src):
                outs[n % files].write(line)
            for out in outs:
                out.close()
        (many / "_done").write_text("")
    return {"1 file": str(one / "ratings.csv"), f"{files} files": str(many), "titles": str(one / "movies.csv")}


def watch_pipeline(cmd: list, stages: list) -> tuple:
    """Run ``cmd`` (cf-pipeline); returns (returncode, stderr tail, seconds, {stage: {part: peak MiB}}).
    The stage running is the first not yet logged as ``stage X: succeeded``."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done, current, tail = threading.Event(), [0], []
    peaks = {s: {"all": 0.0, "jvm": 0.0, "driver": 0.0, "workers": 0.0, "rss": 0.0} for s in stages}

    def read_log() -> None:
        for line in proc.stderr:
            tail.append(line)
            del tail[:-200]
            for k, stage in enumerate(stages):
                if f"stage {stage}: " in line and ("succeeded" in line or "skipped" in line):
                    current[0] = max(current[0], k + 1)

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            if current[0] < len(stages):
                peak = peaks[stages[current[0]]]
                for part, size in tree_memory(root).items():
                    peak[part] = max(peak[part], size / 2**20)
            done.wait(0.2)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_log, sample)]
    for t in threads:
        t.start()
    proc.stdout.read()
    proc.wait()
    done.set()
    for t in threads:
        t.join()
    return proc.returncode, "".join(tail[-40:]), time.perf_counter() - started, peaks


def run_layout(name: str, path: str, titles: str, work: Path, extra: list) -> dict:
    root = work / "runs" / name.replace(" ", "-")
    shutil.rmtree(root, ignore_errors=True)  # a run to measure, not one the pipeline reuses
    stages = ["prepare", "train", "score"]
    cmd = [str(BIN / "cf-pipeline"), "--conf", str(ROOT / "conf" / "local.yaml"),
           "--set", f"pipeline.stages=[{','.join(stages)}]",
           "--set", f"prepare.input={path}", "--set", f"pipeline.output_root={root}",
           "--set", "train.epochs=1", "--set", "train.progress=false", "--set", f"score.titles={titles}",
           "--set", "score.show_examples=0", *[a for o in extra for a in ("--set", o)]]
    code, tail, seconds, peaks = watch_pipeline(cmd, stages)
    if code != 0:
        raise SystemExit(f"cf-pipeline failed on {name} (exit {code}):\n{tail}")
    run = root / (root / "latest").read_text().strip()  # ``latest`` names the run
    manifest = json.loads((run / "manifest.json").read_text())
    return {"layout": name, "seconds": seconds, "peaks": peaks, "stages": manifest["stages"],
            "prepared": str(run / "prepare")}


def print_layouts(results: list) -> None:
    print(f"\n{'input':>9} {'stage':>8} {'seconds':>8} {'rows/s':>11} {'peak MiB':>9} {'JVM':>6} {'driver':>6} "
          f"{'workers':>7} {'RSS MiB':>8}  notes (peaks of PSS: of the whole tree, and of each part alone; "
          f"RSS: summed resident sizes, shared pages once per process)")
    for r in results:
        for stage in ("prepare", "train", "score"):
            entry = r["stages"][stage]
            rep = entry.get("report") or {}
            rate = {"prepare": rep.get("input_rows", 0) / max(entry["seconds"], 1e-9),
                    "train": rep.get("ratings_per_s", 0),
                    "score": rep.get("users_scored", 0) / max(entry["seconds"], 1e-9)}.get(stage, 0)
            note = {"prepare": f"{rep.get('input_rows', 0):,} rows; checksum {rep.get('input_sha256', '')[:8]}",
                    "train": f"{rep.get('row_updates')} row updates, {rep.get('loader')} loader, valid RMSE "
                             f"{rep.get('valid_rmse')}",
                    "score": f"{rep.get('users_scored', 0):,} users' top {rep.get('top_n')} (rows/s: users/s)"}.get(stage, "")
            peak = r["peaks"][stage]
            print(f"{r['layout']:>9} {stage:>8} {entry['seconds']:>8.1f} {rate:>11,.0f} {peak['all']:>9,.0f} "
                  f"{peak['jvm']:>6,.0f} {peak['driver']:>6,.0f} {peak['workers']:>7,.0f} {peak['rss']:>8,.0f}  {note}")
        total = sum(e["seconds"] for e in r["stages"].values())
        print(f"{r['layout']:>9} {'all':>8} {r['seconds']:>8.1f} {'':>11} {max(p['all'] for p in r['peaks'].values()):>9,.0f}  "
              f"wall of the cf-pipeline process (stages {total:.1f} s, the rest JVM start and stop)")


def trainer_alone(prepared: str, work: Path) -> None:
    """``cf-train`` for one epoch with each loader: the shipped objective, and the lesson's ``rating``."""
    print(f"\n{'trainer alone (cf-train, 1 epoch)':<46} {'ratings/s':>11} {'wall s':>8} {'peak MiB':>9} "
          f"{'valid RMSE':>10}")
    for objective in ("shipped", "rating"):
        for loader in ("petastorm", "memory"):
            cmd = [str(BIN / "cf-train"), "--conf", str(ROOT / "conf" / "local.yaml"), "--overwrite",
                   "--set", f"train.data={prepared}", "--set", f"train.output={work / ('alone-' + loader)}",
                   "--set", "train.epochs=1", "--set", "train.progress=false", "--set", f"train.loader={loader}",
                   "--set", "train.memory_max_rows=100000000",
                   *(["--set", f"train.objective={objective}"] if objective != "shipped" else [])]
            r = run_watched(cmd)
            if r.returncode != 0:
                print(f"  {objective}, {loader}: failed: {r.stderr[-500:]}")
                continue
            rep = json.loads(r.stdout[r.stdout.index("{"):])
            label = f"{rep['objective']}, {loader} loader, {rep['row_updates']} updates"
            print(f"{label:<46} {rep['ratings_per_s']:>11,} {r.seconds:>8.1f} {r.peak_mib:>9,.0f} "
                  f"{rep['valid_rmse']:>10}", flush=True)


def als_fit(prepared: str, iterations: int) -> None:
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.recommendation import ALS

    from cfmodel.config import SparkConfig
    from cfmodel.session import get_spark

    spark = get_spark(SparkConfig(master="local[*]", log_level="ERROR",
                                  conf={"spark.driver.memory": "4g", "spark.sql.shuffle.partitions": "8"}))
    train = spark.read.parquet(f"{prepared}/train").select("user_idx", "item_idx", "rating").cache()
    n = train.count()
    started = time.perf_counter()
    model = ALS(rank=50, maxIter=iterations, regParam=0.1, userCol="user_idx", itemCol="item_idx",
                ratingCol="rating", seed=42, coldStartStrategy="drop").fit(train)
    seconds = time.perf_counter() - started
    # Its validation RMSE beside the train stage's (one epoch there): the same split, the same rows.
    valid = spark.read.parquet(f"{prepared}/valid").select("user_idx", "item_idx", "rating")
    rmse = RegressionEvaluator(metricName="rmse", labelCol="rating").evaluate(model.transform(valid))
    print(f"\nSpark MLlib ALS fit, rank 50, {iterations} iterations, {n:,} training ratings: {seconds:.1f} s "
          f"({n * iterations / seconds:,.0f} rating-iterations/s); validation RMSE {rmse:.4f}")
    spark.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--files", type=int, default=10, help="the split layout's file count")
    parser.add_argument("--work", default="/tmp/cfmodel-bench-scale")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to cf-pipeline")
    parser.add_argument("--als-iter", type=int, default=5)
    parser.add_argument("--skip-als", action="store_true")
    parser.add_argument("--skip-trainer", action="store_true")
    parser.add_argument("--layouts", nargs="+", default=["one", "many"], choices=["one", "many"])
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    paths = inputs(work, args.ratings, args.users, args.items, args.files)
    print(f"{args.ratings:,} planted ratings, {args.users:,} users x {args.items:,} items, as one CSV "
          f"({os.path.getsize(paths['1 file']) / 2**20:,.0f} MiB) and as {args.files} files; inputs ready in "
          f"{time.perf_counter() - started:.0f} s; {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB", flush=True)
    results = [run_layout(name, paths[name], paths["titles"], work, args.overrides)
               for name, key in (("1 file", "one"), (f"{args.files} files", "many")) if key in args.layouts]
    print_layouts(results)
    if not args.skip_trainer:
        trainer_alone(results[0]["prepared"], work)
    if not args.skip_als:
        als_fit(results[0]["prepared"], args.als_iter)
    return 0


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_scale"):
        code = main()
    sys.exit(code)
