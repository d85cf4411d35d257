"""``make demo`` with MLflow tracking on, against a real MLflow server this script starts (SQLite backend, a
local port), then read back: the run, its parameters, every epoch's metrics, the report artifact, and the
logged model, whose ``predict`` must return the score stage's exported lists for 100 sampled users.

    make bench-mlflow-demo      # writes bench/results/bench_mlflow_demo.md

Runs the demo into a temporary runs directory (pipeline.output_root), so ./runs is left alone.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import recorded  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _server(root: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                             "--default-artifact-root", f"file://{root}/artifacts", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                return proc, uri
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the MLflow server did not start within 90 s")


def _check(uri: str, runs: Path, rows) -> bool:
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cf-demo")
    parents = [r for r in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    rows.append(("pipeline runs in the experiment", len(parents), len(parents) == 1))
    run = parents[0]
    rows.append(("parameters (the resolved config)", len(run.data.params), len(run.data.params) >= 20))
    run_dir = runs / run.data.tags["mlflow.runName"]
    history = client.get_metric_history(run.info.run_id, "valid_rmse")
    epochs = len(json.loads((run_dir / "train" / "metrics.json").read_text()))  # the epochs the train stage ran
    rows.append(("epochs with valid_rmse logged", f"{len(history)} of {epochs}", len(history) == epochs > 0))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}
    rows.append(("report artifact", "evaluate/report.html" in artifacts, "evaluate/report.html" in artifacts))
    recs = pd.read_parquet(run_dir / "score" / "recommendations")
    users = pd.Series(recs["user_id"].unique()).sample(100, random_state=0).tolist()
    mlflow.set_tracking_uri(uri)
    got = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(pd.DataFrame({"user_id": users}))
    key = ["user_id", "rank", "item_id"]
    want = recs[recs["user_id"].isin(users)].sort_values(key[:2], ignore_index=True)[key]
    same = got.sort_values(key[:2], ignore_index=True)[key].astype(want.dtypes).equals(want)
    rows.append(("logged model's lists == score's export, 100 sampled users", same, same))
    return all(ok for _, _, ok in rows)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cfmodel-mlflow-demo-"))
    proc, uri = _server(work)
    rows, ok = [], False
    try:
        conf = (f"conf/local.yaml --conf conf/demo.yaml --set tracking.mlflow.uri={uri} "
                f"--set tracking.mlflow.experiment=cf-demo --set pipeline.output_root={work}/runs")
        started = time.time()
        done = subprocess.run(["make", "-s", "demo", f"DEMO_CONF={conf}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=3600)
        if done.returncode != 0:
            raise SystemExit(f"make demo failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        rows.append(("make demo with tracking.mlflow.uri set", f"{time.time() - started:.0f} s", True))
        warned = [line for line in (done.stdout + done.stderr).splitlines() if "MLflow tracking at" in line]
        rows.append(("tracking warnings in the demo's log", len(warned), not warned))
        for line in warned:
            print(line, file=sys.stderr)
        ok = _check(uri, work / "runs", rows)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)
    print("| check | value | |\n|---|---|---|")
    for check, value, good in rows:
        print(f"| {check} | {value} | {'ok' if good else 'FAIL'} |")
    print(f"\n{'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    with recorded("bench_mlflow_demo"):
        main()
