"""A user's own data shapes, in one run: events without ratings, text ids, another rating scale, the time
split, and prepare's speed on an event log.

    .venv/bin/python bench/bench_own_data.py                    # make bench-own-data
    .venv/bin/python bench/bench_own_data.py --scale-rows 2000000
    .venv/bin/python bench/bench_own_data.py --parts movielens --scale-rows 0 --set train.seed=1

Every row is one ``cf-pipeline`` run (``conf/local.yaml``, the shipped defaults, prepare's input and the
split changed only) on a copy of ml-latest-small-2016's ratings made to look like a user's file:

- ``ratings``: as shipped (0.5-5 stars, integer ids), under three splits: ``random`` (20%), ``per_user``
  (25% of each user's) and ``time`` (each user's latest 20%); held-out ratings >= 4 are relevant.
- ``text ids`` (part ``ids``): the same ratings with ids ``u<userId>`` and ``m<movieId>``, beside the integer
  ids, both split at one global time (``split_time``: the 80th percentile of the timestamps), the one split
  that does not hash the ids, so both runs hold out the same rows (a random split hashes ``u1`` and ``1``
  apart). Ids index in another order, so the same seed starts from other weights: each pair is trained
  under three seeds, and the integer ids' own spread over seeds is the yardstick for the ratio.
  ``padded ids`` (``u000001``, ``m000001``: zero-padded SKU-style text) sort as the integers do, so they
  index in the same order: the same seed must then give the integer run's numbers exactly, and any
  difference is the text path's own (a lost or mismatched row, a hashed label colliding in evaluate).
- ``1-10 scale``: the same ratings doubled, every scale key left null (inferred), random split.
- ``events``: the rating column dropped (``userId, movieId, timestamp``): implicit feedback with its
  defaults, random split, every held-out pair relevant; implicit ALS's grid (best point by NDCG) beside it.
  Each pair is one event there, so ``train.confidence`` changes nothing on it:
- ``planted events``: the demo generator's event log (``generate.feedback=implicit``: liked pairs repeated
  more the more they are liked, so counts carry taste), under each ``train.confidence``.

Lists are top 10, training items excluded. Then prepare alone on planted data of the ML-20M shape
(138,000 users, 27,000 movies, ``--scale-rows`` rows) read as ratings and, with the rating column cut,
as events: rows/s in the same run. The table goes to ``bench/results/bench_own_data.md``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import table_name, write_results  # noqa: E402
from cfmodel import prepare  # noqa: E402
from cfmodel.config import GenerateConfig, load_config  # noqa: E402
from cfmodel.generate import generate  # noqa: E402
from cfmodel.pipeline import run_pipeline  # noqa: E402
from cfmodel.session import spark_session  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small-2016"
SPLITS = {"random": ["prepare.split=random", "prepare.valid_fraction=0.2"],
          "per_user": ["prepare.split=per_user", "prepare.valid_fraction=0.25"],
          "time": ["prepare.split=time", "prepare.valid_fraction=0.2"], "cutoff": ["prepare.split=time"]}
COMMON = ["spark.log_level=ERROR", "train.progress=false", "train.loader=memory", "score.show_examples=0",
          "score.output_files=1", "evaluate.titles=null", "evaluate.top_movies=50"]


def shapes(work: Path) -> dict:
    """The user-shaped copies of MovieLens small: {name: csv path}."""
    frame = pd.read_csv(MOVIELENS / "ratings.csv")
    out = {"ratings": work / "ratings.csv", "text ids": work / "text_ids.csv", "padded ids": work / "padded.csv",
           "1-10 scale": work / "x2.csv", "events": work / "events.csv"}
    frame.to_csv(out["ratings"], index=False)
    frame.assign(userId="u" + frame["userId"].astype(str), movieId="m" + frame["movieId"].astype(str)).to_csv(
        out["text ids"], index=False)
    width = {c: len(str(frame[c].max())) for c in ("userId", "movieId")}
    frame.assign(userId="u" + frame["userId"].astype(str).str.zfill(width["userId"]),
                 movieId="m" + frame["movieId"].astype(str).str.zfill(width["movieId"])).to_csv(
        out["padded ids"], index=False)
    frame.assign(rating=(frame["rating"] * 2).astype(int)).to_csv(out["1-10 scale"], index=False)
    frame[["userId", "movieId", "timestamp"]].to_csv(out["events"], index=False)
    return out


def pipeline_row(spark, work: Path, name: str, path: Path, split: str, extra=(), tag=None) -> list:
    """One pipeline run's evaluate table, each method a row tagged with the data and ``tag`` (the split)."""
    sets = [f"prepare.input={path}", f"pipeline.output_root={work}/runs", *SPLITS[split], *COMMON, *extra]
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), sets)
    started = time.time()
    manifest = run_pipeline(spark, cfg, f"{name.replace(' ', '-')}-{split}")
    seconds = time.time() - started
    report = manifest["stages"]["evaluate"]["report"]
    print(f"[{name}, {split}] {seconds:.0f} s", flush=True)
    return [{"data": name, "split": tag or split, **row, "run_s": round(seconds)} for row in report["methods"]]


def quality(spark, work: Path, data: dict) -> list:
    rows = []
    for split in ("random", "per_user", "time"):
        rows += pipeline_row(spark, work, "ratings", data["ratings"], split, ["evaluate.baselines=[popular, ease]"])
    rows += pipeline_row(spark, work, "1-10 scale", data["1-10 scale"], "random",
                         ["evaluate.baselines=[popular]", "evaluate.relevance_threshold=8.0"])
    rows += pipeline_row(spark, work, "events", data["events"], "random")
    return rows


SEEDS = (42, 1, 2)  # 42 is the shipped train.seed


def id_types(spark, work: Path, data: dict) -> list:
    """Integer ids and text ids under one global time cutoff, each trained under every seed of ``SEEDS``; the
    padded text ids (the integers' index order) under the first seed."""
    cutoff = int(pd.read_csv(data["ratings"], usecols=["timestamp"])["timestamp"].quantile(0.8))
    runs = [(seed, name) for seed in SEEDS for name in ("ratings", "text ids")] + [(SEEDS[0], "padded ids")]
    return [row for seed, name in runs for row in pipeline_row(
        spark, work, name, data[name], "cutoff", ["evaluate.baselines=[popular]", f"prepare.split_time={cutoff}",
                                                  f"train.seed={seed}"], tag=f"cutoff, seed {seed}")]


def confidence(spark, work: Path) -> list:
    """The demo's planted event log (counts carry taste) under each ``train.confidence``."""
    from cfmodel.config.train import CONFIDENCES

    generate(GenerateConfig(feedback="implicit", seed=42), str(work / "planted"))
    return [row for weight in CONFIDENCES for row in pipeline_row(
        spark, work, f"planted events, confidence={weight}", work / "planted" / "events.csv", "random",
        [f"train.confidence={weight}"])]


def prepare_speed(spark, work: Path, n_rows: int) -> list:
    """rows/s of prepare on planted ratings and on the same rows as events (the rating column cut)."""
    made = work / f"planted-{n_rows}"
    if not (made / "ratings.csv").exists():
        generate(GenerateConfig(n_ratings=n_rows, n_users=138_000, n_items=27_000, seed=42), str(made))
    events = made / "events.csv"
    if not events.exists():
        with open(events, "wb") as out:
            subprocess.run(["cut", "-d,", "-f1,2,4", str(made / "ratings.csv")], stdout=out, check=True)
    rows = []
    for name, path in (("ratings", made / "ratings.csv"), ("events", events), ("ratings", made / "ratings.csv")):
        cfg = load_config(str(ROOT / "conf" / "local.yaml"), [f"prepare.input={path}", "spark.log_level=ERROR",
                                                               f"prepare.output={work}/prepared-{name}"])
        report = prepare.run(spark, cfg, overwrite=True)
        rows.append({"input": name, "rows": report["input_rows"], "seconds": report["seconds"],
                     "rows_per_s": round(report["input_rows"] / report["seconds"])})
        print(f"[prepare {name}] {rows[-1]}", flush=True)
        shutil.rmtree(f"{work}/prepared-{name}", ignore_errors=True)
    return rows


def _id_checks(model: dict) -> list:
    """Text ids against integer ids, seed by seed and on the mean over seeds, beside the integer ids' spread."""
    seeds = [seed for seed in SEEDS if ("text ids", f"cutoff, seed {seed}") in model]
    if not seeds:
        return []
    pairs = [(model[("ratings", f"cutoff, seed {s}")], model[("text ids", f"cutoff, seed {s}")]) for s in seeds]
    out = []
    for key, name in (("rmse", "RMSE"), ("ndcg", "NDCG")):
        ints, texts = [i[key] for i, _ in pairs], [t[key] for _, t in pairs]
        out += [f"| text ids {name} / int ids {name}, seed {s} | {t / i:.4f} |" for s, i, t in zip(seeds, ints, texts)]
        out += [f"| text ids {name} / int ids {name}, mean of seeds | {sum(texts) / sum(ints):.4f} |",
                f"| int ids {name}, highest seed / lowest seed | {max(ints) / min(ints):.4f} |"]
    padded = model.get(("padded ids", f"cutoff, seed {SEEDS[0]}"))
    if padded is not None:
        base = model[("ratings", f"cutoff, seed {SEEDS[0]}")]
        out += [f"| padded ids {name} / int ids {name} (same index order), seed {SEEDS[0]} | "
                f"{padded[key] / base[key]:.4f} |" for key, name in (("rmse", "RMSE"), ("ndcg", "NDCG"))]
    return out


def render(rows: list, speed: list) -> str:
    def cell(v, fmt=".4f"):
        return "—" if v is None else format(v, fmt)

    popular = {(r["data"], r["split"]): r["ndcg"] for r in rows if r["method"] == "most popular"}
    ease_ndcg = {(r["data"], r["split"]): r["ndcg"] for r in rows if r["method"].startswith("EASE")}
    out = ["| data | split | method | RMSE | NDCG@10 | × popular | × EASE | P@10 | R@10 | MAP@10 | coverage |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        key = (r["data"], r["split"])
        ease = f"{r['ndcg'] / ease_ndcg[key]:.3f}" if key in ease_ndcg else "—"
        out.append(f"| {r['data']} | {r['split']} | {r['method']} | {cell(r['rmse'])} | {cell(r['ndcg'])} | "
                   f"{r['ndcg'] / popular[key]:.3f} | {ease} | {cell(r['precision'])} | {cell(r['recall'])} | "
                   f"{cell(r['map'])} | {cell(r['coverage'])} |")
    model = {(r["data"], r["split"]): r for r in rows if r["method"].startswith("model")}
    checks = _id_checks(model) + ([] if ("1-10 scale", "random") not in model else [
        f"| 1-10 scale RMSE / (2 × 0.5-5 RMSE) | "
        f"{model[('1-10 scale', 'random')]['rmse'] / (2 * model[('ratings', 'random')]['rmse']):.4f} |"])
    out += ["", "| check | value |", "|---|---:|", *checks] if checks else []
    if speed:
        out += ["", "| prepare input (ML-20M shape) | rows | seconds | rows/s |", "|---|---:|---:|---:|"]
        out += [f"| {s['input']} | {s['rows']:,} | {s['seconds']} | {s['rows_per_s']:,} |" for s in speed]
    out += ["", "Relevant: held-out ratings >= 4 (>= 8 on the 1-10 scale); for events every held-out pair. "
                "Each model row is the shipped default objective (`auto`: hybrid on ratings, softmax on events)."]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-rows", type=int, default=20_000_000, help="prepare speed rows (0: skip)")
    parser.add_argument("--work", default="/tmp/cfmodel-bench-own-data", help="kept: the planted scale inputs")
    parser.add_argument("--parts", default="movielens,ids,confidence",
                        help="comma-separated: movielens, ids, confidence")
    parser.add_argument("--set", action="append", default=[],
                        help="a config override for every pipeline run (not prepare's speed)")
    args = parser.parse_args(argv)
    COMMON.extend(args.set)  # every pipeline_row's settings
    if not (MOVIELENS / "ratings.csv").exists():
        raise SystemExit(f"MovieLens small not found at {MOVIELENS}")
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), ["spark.log_level=ERROR"])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp, spark_session(cfg.spark) as spark:
        parts = args.parts.split(",")
        data = shapes(Path(tmp)) if {"movielens", "ids"} & set(parts) else {}  # the copies, written once
        rows = quality(spark, Path(tmp), data) if "movielens" in parts else []
        rows += id_types(spark, Path(tmp), data) if "ids" in parts else []
        rows += confidence(spark, Path(tmp)) if "confidence" in parts else []
        speed = prepare_speed(spark, work, args.scale_rows) if args.scale_rows else []
    body = render(rows, speed)
    print(body)
    # A partial run, or one with overrides, keeps the shipped defaults' full table and writes its own beside it.
    partial = not set(parts) >= {"movielens", "ids", "confidence"}
    name = table_name("bench_own_data", "_".join(parts) if partial else "", bool(args.set))
    print(f"written: {write_results(name, body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
