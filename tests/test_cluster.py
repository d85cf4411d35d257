"""prepare and score submitted to a real Spark standalone cluster, shipping the project as a wheel.

The jobs run under an interpreter that cannot import the project from the
checkout (``python -S`` with only site-packages on the path, so the editable
install's hook is not loaded): driver and executors import ``cfmodel`` from the
project archive given to ``--py-files`` (``make dist``), as on a cluster. Outputs must equal the
``local[2]`` run's.
"""
import json
import os
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from cfmodel.config import load_config
from cfmodel.generate import generate
from cluster import standalone_cluster
from cfmodel import prepare, score, train
from cfmodel.model import TrainedModel

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def py_files(tmp_path_factory):
    """``make dist``'s two artefacts: the wheel, and the same archive named .zip for ``--py-files``."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(["make", "-s", "dist", f"DIST={out}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("cfmodel-*-py3-none-any.whl")
    (archive,) = out.glob("cfmodel-*-py-files.zip")
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
    assert {"cfmodel/model/topn.py", "cfmodel/pipeline/runs.py", "cfmodel/score/stage.py",
            "cfmodel/jobs/score.py"} <= names
    # No top-level package named ``jobs`` (it would collide in site-packages): the scripts live in cfmodel.
    assert not any(name.startswith("jobs/") for name in names)
    return archive


def _python_without_project(tmp: Path) -> Path:
    wrapper = tmp / "python-no-project"
    site = sysconfig.get_paths()["purelib"]
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" exec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    probe = subprocess.run([str(wrapper), "-c", "import cfmodel"], capture_output=True, text=True, cwd=tmp)
    assert probe.returncode != 0, "the wrapper must not see the checkout"
    return wrapper


def _frame(path, sort):
    return pd.read_parquet(path).sort_values(sort, ignore_index=True)


def test_standalone_cluster_equals_local(spark, tmp_path, py_files):
    raw = generate(load_config(None, ["generate.n_users=300", "generate.n_items=200",
                                      "generate.n_ratings=12000"]).generate, str(tmp_path / "raw"))["ratings"]
    base = [f"prepare.input={raw}", "prepare.rows_per_file=4000", "prepare.row_group_mb=1",
            "score.show_examples=0", "score.titles=null", "score.formats=[parquet, nested]"]
    local = load_config(str(ROOT / "conf" / "local.yaml"), base + [
        f"prepare.output={tmp_path}/local/prepared", f"train.data={tmp_path}/local/prepared",
        f"train.output={tmp_path}/model", "train.epochs=2", "train.n_factors=8", "train.progress=false",
        f"score.model={tmp_path}/model", f"score.data={tmp_path}/local/prepared",
        f"score.output={tmp_path}/local/recs"])
    prepare.run(spark, local, overwrite=False)
    train.run(local.train, overwrite=False)
    score.run(spark, local, overwrite=False)

    python = _python_without_project(tmp_path)
    env = {**os.environ, "PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python)}
    env.pop("PYTHONPATH", None)
    with standalone_cluster(tmp_path / "cluster", workers=2) as master:
        def submit(job, *sets):
            cmd = [str(BIN / "spark-submit"), "--master", master, "--py-files", str(py_files),
                   "--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=1g",
                   "--conf", "spark.cores.max=2", "--conf", "spark.ui.enabled=false",
                   str(ROOT / "jobs" / f"{job}.py"), "--conf", str(ROOT / "conf" / "local.yaml")]
            for s in base + list(sets):
                cmd += ["--set", s]
            done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            return done

        submit("prepare", f"prepare.output={tmp_path}/cluster_out/prepared")
        submit("score", f"score.model={tmp_path}/model", f"score.data={tmp_path}/cluster_out/prepared",
                           f"score.output={tmp_path}/cluster_out/recs")
        # Training placed by Spark: two barrier tasks on the workers, one torchrun node each.
        trained = submit("train", f"train.data={tmp_path}/cluster_out/prepared", f"train.output={tmp_path}/cluster_model",
               "train.epochs=2", "train.n_factors=8", "train.progress=false", "train.distributed.processes=2",
               "train.distributed.local_mode=false")

    for part, key in (("train", ["user_idx", "item_idx"]), ("valid", ["user_idx", "item_idx"]),
                      ("users", ["user_idx"]), ("items", ["item_idx"])):
        pd.testing.assert_frame_equal(_frame(f"{tmp_path}/cluster_out/prepared/{part}", key),
                                      _frame(f"{tmp_path}/local/prepared/{part}", key), obj=part)
    got = _frame(f"{tmp_path}/cluster_out/recs/recommendations", ["user_id", "rank"])
    want = _frame(f"{tmp_path}/local/recs/recommendations", ["user_id", "rank"])
    assert len(got) == 300 * 10
    pd.testing.assert_frame_equal(got.drop(columns="score"), want.drop(columns="score"))
    assert (got["score"] - want["score"]).abs().max() < 1e-5
    # The executors really were the cluster's: each worker ran an executor for each job.
    logs = list((tmp_path / "cluster").glob("work*/app-*/*/stderr"))
    assert len({p.parts[-4] for p in logs}) == 2 and len({p.parts[-3] for p in logs}) == 3
    # The model trained on the workers is one like the local run's: same kind, ids and comparable quality.
    remote, mine = TrainedModel.load(f"{tmp_path}/cluster_model"), TrainedModel.load(f"{tmp_path}/model")
    assert remote.args == mine.args and list(remote.user_ids) == list(mine.user_ids)
    assert abs(remote.extra["valid_mse"] - mine.extra["valid_mse"]) < 0.05
    meta = json.loads(Path(f"{tmp_path}/cluster_model/meta.json").read_text())
    assert meta["processes"] == 2 and meta["epochs"] == 2
    # Two processes trained, as barrier tasks on the executors (their logs stream back to the driver).
    logged = trained.stdout + trained.stderr
    assert "Started distributed training with 2 executor processes" in logged
    assert logged.count("epoch 2: train loss") == 2, logged[-3000:]
