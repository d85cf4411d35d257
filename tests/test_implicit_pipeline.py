"""Events end to end: a planted event log through prepare, train, score and evaluate as one pipeline run."""
import json
from pathlib import Path

import pandas as pd
import pytest

from cfmodel.config import load_config
from cfmodel.pipeline import run_pipeline
from cfmodel.train import main as train_main

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def events_run(spark, tmp_path_factory):
    """The shipped local config with one setting changed for events: the generated demo writes an event log
    (``userId, movieId, timestamp``, no rating column), which prepare reads as implicit feedback."""
    tmp = tmp_path_factory.mktemp("events")
    sets = [f"generate.output={tmp}/gen", "generate.feedback=implicit", "generate.n_users=600",
            "generate.n_items=400", "generate.n_ratings=40000", "generate.noise=0.3",
            "pipeline.stages=[generate, prepare, train, score, evaluate]", f"pipeline.output_root={tmp}/runs",
            "prepare.rows_per_file=5000", "prepare.row_group_mb=1", "train.batch_size=128", "train.progress=false",
            "score.show_examples=0", "score.output_files=1", "evaluate.implicit_als_n_factors=[16]",
            "evaluate.implicit_als_regs=[0.1]", "evaluate.implicit_als_alphas=[10.0]", "evaluate.top_movies=50",
            "evaluate.table_size=5"]
    cfg = load_config([str(ROOT / "conf" / "local.yaml"), str(ROOT / "conf" / "demo.yaml")], sets)
    manifest = run_pipeline(spark, cfg, "ev")
    return tmp / "runs" / "ev", manifest


def test_events_train_the_ranking_objective_and_its_lists_beat_most_popular(events_run):
    """Broken versions caught: popularity lists or random lists as the model's (the 1.1x margin fails), events
    read as ratings (hybrid would be chosen and RMSE rows appear), the rating baselines run on counts."""
    run_dir, manifest = events_run
    prepare = manifest["stages"]["prepare"]["report"]
    assert prepare["feedback"] == "implicit" and prepare["events_merged"] > 0 and prepare["reconciled"]
    assert manifest["stages"]["train"]["report"]["objective"] == "softmax"
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["feedback"] == "implicit" and metrics["relevance_threshold"] is None
    rows = {r["method"].split(" (")[0]: r for r in metrics["methods"]}
    assert set(rows) == {"model", "most popular", "implicit ALS", "EASE"}
    assert all(r["rmse"] is None for r in rows.values())
    assert rows["model"]["ndcg"] >= 1.1 * rows["most popular"]["ndcg"], rows
    assert rows["model"]["ndcg"] >= 0.9 * rows["EASE"]["ndcg"], rows
    # The report of a model that predicts no ratings draws no predicted-vs-actual plot and does not show one
    # (mutant caught: the page listing every plot whether drawn or not: a broken image).
    plots, page = run_dir / "evaluate" / "plots", (run_dir / "evaluate" / "report.html").read_text()
    assert (plots / "pca_scatter.png").exists() and not (plots / "predicted_vs_actual.png").exists()
    assert "plots/pca_scatter.png" in page and "predicted_vs_actual" not in page


def test_events_are_scored_for_every_user(events_run):
    run_dir, manifest = events_run
    recs = pd.read_parquet(run_dir / "score" / "recommendations")
    assert recs["user_id"].nunique() == manifest["stages"]["prepare"]["report"]["n_users"]
    assert (recs.groupby("user_id").size() == 10).all()


def test_a_rating_objective_on_events_exits_2_with_one_line_naming_the_key(events_run, tmp_path, capsys):
    """cf-train's entry point in-process (test_train_job runs the command itself). Mutant caught: the
    objective resolved without checking the data's feedback (trains, ``assert 0 == 2``)."""
    run_dir, _ = events_run
    assert train_main(["--set", f"train.data={run_dir}/prepare", "--set", f"train.output={tmp_path}/m",
                       "--set", "train.objective=hybrid"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: train.objective=hybrid predicts ratings") and "implicit" in last, err[-2000:]
    assert not (tmp_path / "m").exists()
