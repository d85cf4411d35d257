"""A pipeline run recorded in a real MLflow tracking server (tests/mlflow_server.py: SQLite backend, a local
port, started by conftest at collection)."""
import pandas as pd
import pytest

from helpers import OwnRoot

pytestmark = [pytest.mark.slow,  # end to end: left out of make test-fast
              pytest.mark.mlflow]  # conftest starts the server (mlflow_server) when the run selects these

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def tracked_run(spark, mlflow_server, pipeline_run, tmp_path_factory):
    """Run ``t1`` on a copy of conftest's pipeline run: prepare, train and score are copied from ``r1`` (tracking
    records a run from its files, copied or not), evaluate runs again with the biases baseline."""
    from cfmodel.pipeline import run_pipeline

    root = OwnRoot(pipeline_run[0], tmp_path_factory.mktemp("tracked"))
    # The biases baseline's row, "user + movie biases", is a name MLflow refuses as a metric's as it stands.
    cfg = root.config(f"tracking.mlflow.uri={mlflow_server}", "tracking.mlflow.experiment=cf-test",
                      "tracking.mlflow.register_as=cf-lists", "evaluate.baselines=[global_mean, biases]")
    manifest = run_pipeline(spark, cfg, "t1")
    assert manifest["stages"]["train"]["reused_from"] == "r1" and "reused_from" not in manifest["stages"]["evaluate"]
    return root.tmp / "runs" / "t1", manifest


def test_the_run_is_one_mlflow_run_with_the_config_every_epoch_and_the_report(mlflow_server, tracked_run):
    """Broken versions caught: tracking left off, epochs logged as one value, the report not uploaded."""
    from mlflow.tracking import MlflowClient

    run_dir, manifest = tracked_run
    client = MlflowClient(mlflow_server)
    run = client.get_run(manifest["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.runName"] == "t1"
    assert len(run.data.params) >= 20 and run.data.params["train.n_factors"] == "8"
    epochs = client.get_metric_history(run.info.run_id, "valid_rmse")
    assert [m.step for m in epochs] == [1, 2, 3, 4] and all(m.value > 0 for m in epochs)
    assert run.data.metrics["model.rmse"] == pytest.approx(manifest["stages"]["evaluate"]["report"]["valid_rmse"])
    # Every row of the evaluation table (mutant caught: the method's name used as it stands, "+" and all,
    # which the server refuses, and the whole run's tracking with it).
    assert {"global_mean.rmse", "user_movie_biases.rmse"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/report.html", "evaluate/metrics.json"} <= artifacts
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert {c.data.tags["mlflow.runName"] for c in children} >= {"prepare", "train", "score", "evaluate"}
    assert client.get_latest_versions("cf-lists")[0].run_id == run.info.run_id


def test_the_logged_model_predicts_the_score_stages_lists(mlflow_server, tracked_run):
    """The pyfunc, loaded from the server without Spark, returns the exported lists for sampled users."""
    run_dir, manifest = tracked_run
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"runs:/{manifest['mlflow_run_id']}/model")
    recs = pd.read_parquet(run_dir / "score" / "recommendations")
    users = sorted(recs["user_id"].unique())[:100]
    got = model.predict(pd.DataFrame({"user_id": users}))
    key = ["user_id", "rank", "item_id"]
    want = recs[recs["user_id"].isin(users)].sort_values(key[:2], ignore_index=True)[key]
    assert got.sort_values(key[:2], ignore_index=True)[key].astype(want.dtypes).equals(want)
