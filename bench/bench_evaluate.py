"""Evaluation benchmark: the model and every baseline on MovieLens small, in one run.

    .venv/bin/python bench/bench_evaluate.py

Runs the pipeline's prepare, train and evaluate stages (``conf/local.yaml``
defaults: the lesson's random 20% validation split with seed 42, dot_bias with
50 factors) on ``../shared/data/ml-latest-small-2016/ratings.csv`` with titles
from its ``movies.csv``, and prints the evaluate stage's table: RMSE, MAE and
the ranking metrics at k=10 for the model, the global mean, user + movie
biases, most popular and Spark MLlib ALS, all on the same split. The report
lands in ``bench/out/bench-evaluate/<time>/run/evaluate/report.html``; each
run gets a fresh output root, so nothing is reused from an earlier run.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cfmodel.config import load_config  # noqa: E402
from cfmodel.pipeline.runs import new_run_id  # noqa: E402
from cfmodel.session import spark_session  # noqa: E402
from cfmodel.pipeline import run_pipeline  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small-2016"


def main() -> None:
    if not (MOVIELENS / "ratings.csv").exists():
        raise SystemExit(f"MovieLens small not found at {MOVIELENS}")
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), [
        f"prepare.input={MOVIELENS / 'ratings.csv'}", f"evaluate.titles={MOVIELENS / 'movies.csv'}",
        "evaluate.top_movies=1000", f"pipeline.output_root={ROOT / 'bench' / 'out' / 'bench-evaluate' / new_run_id()}",
        "pipeline.stages=[prepare, train, evaluate]", "train.progress=false", "spark.log_level=ERROR"])
    with spark_session(cfg.spark) as spark:
        manifest = run_pipeline(spark, cfg, "run")
    evaluate = manifest["stages"]["evaluate"]["report"]
    seconds = {s: e["seconds"] for s, e in manifest["stages"].items()}
    # The pipeline has printed the evaluate stage's table above.
    print(f"\nMovieLens small, lesson split; {evaluate['valid_rows']} held-out ratings, ranking metrics at k=10 "
          f"over {evaluate['users_evaluated']} users; stage seconds {seconds}")


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_evaluate"):
        main()
