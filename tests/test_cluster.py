"""The pipeline submitted to a real Spark standalone cluster, shipping the project as a wheel.

The job runs under an interpreter that cannot import the project from the
checkout (a virtual environment that sees the installed packages, not the
editable install): driver, executors and the training processes they start
import ``cfmodel`` from the project archive given to ``--py-files`` (``make
dist``), as on a cluster. Executors are killed while it runs; outputs must
equal the ``local[2]`` run's.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from cfmodel.config import load_config
from cfmodel.generate import generate
from cluster import executor_pids, standalone_cluster, training_pids
from helpers import sorted_frame
from cfmodel import prepare, score
from cfmodel.session import EXIT_ON_OOM

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARKER = "-Dcfmodel.test.submitted=executor"  # an executor JVM option given on spark-submit's command line


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
    """A virtual environment's interpreter that sees the installed packages but not the project: its one
    ``.pth`` file names this venv's site-packages, whose own ``.pth`` files (the editable install's finder among
    them) are then not read. Every process started from it sees the same, torchrun's training processes
    included (``python -S`` hid the checkout from the job's interpreter, but not from those)."""
    env = tmp / "python-no-project"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=60)
    (site,) = env.glob("lib/python3*/site-packages")
    (site / "installed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = env / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import pyspark, cfmodel"], capture_output=True, text=True,
                           cwd=tmp)
    assert "No module named 'cfmodel'" in probe.stderr, "the interpreter must see the packages, not the checkout"
    return python


def _tasks_begun(pid: int) -> int:
    """How many tasks executor ``pid`` has started (its log, in its working directory)."""
    try:
        return (Path(os.readlink(f"/proc/{pid}/cwd")) / "stderr").read_text(errors="replace").count("Running task")
    except OSError:
        return 0


def _running(job: subprocess.Popen, log: Path, deadline: float) -> bool:
    """Whether to go on waiting for ``job``: it still runs before ``deadline``; a job that ended fails the test
    at once, with the error lines of its log (waiting on would only reach the deadline)."""
    if job.poll() is not None:
        errors = dict.fromkeys(line.strip() for line in log.read_text(errors="replace").splitlines()
                               if "Error: " in line or line.startswith("error: "))
        raise AssertionError(f"the job ended (exit {job.returncode}) before the test could act; its errors "
                             f"({log}):\n" + "\n".join(errors))
    return time.time() < deadline


def _kill_an_executor_in(job: subprocess.Popen, log: Path, stage: str, workdir: Path, deadline: float) -> str:
    """Once the driver's ``log`` shows ``stage`` starting, SIGKILL the first executor JVM that begins a task
    after that; what the log showed then (so the test can tell the kill landed inside the stage)."""
    begun = None
    while _running(job, log, deadline):
        if begun is None and f"stage {stage}: starting" in (log.read_text(errors="replace") if log.exists() else ""):
            begun = {pid: _tasks_begun(pid) for pid in executor_pids(workdir)}
        for pid in executor_pids(workdir) if begun is not None else []:
            if _tasks_begun(pid) > begun.get(pid, 0):
                os.kill(pid, signal.SIGKILL)
                return log.read_text(errors="replace")
        time.sleep(0.1)
    raise TimeoutError(f"no task of stage {stage} began on an executor: {log}")


@contextlib.contextmanager
def _job(cmd, log: Path, env, cwd: Path):
    """``cmd`` running with its output in ``log``; killed when the block leaves, however it leaves."""
    with open(log, "w") as fh:
        job = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        yield job
    finally:
        job.kill()


def _kill_a_training_process(job: subprocess.Popen, log: Path, ckpt: Path, workdir: Path, deadline: float) -> None:
    """Once train's first checkpoint exists, SIGKILL rank 1's training process (a barrier task's)."""
    while _running(job, log, deadline):
        pids = training_pids(workdir, rank=1) if (ckpt / "last.pt").exists() else []
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            return
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint {ckpt}/last.pt with a rank 1 process running")


@pytest.mark.fault(fault='an executor JVM killed mid-prepare and mid-score; a barrier task\'s training process '
                         'killed mid-train (standalone cluster)',
                   exit='0 (task retry); 2 for the lost training process',
                   survives="prepare; train's checkpoints",
                   rerun='training resumes from its checkpoint; outputs identical to local[2]')
def test_standalone_cluster_equals_local_through_lost_executors(spark, tmp_path, py_files, class_archive):
    """One ``spark-submit`` of the pipeline (prepare, train on the workers, score) to a two-worker cluster,
    with an executor JVM killed (SIGKILL) as prepare starts and again as score starts, and rank 1's training
    process killed after train's first checkpoint. Spark's task retry and a relaunched executor finish
    prepare and score, with outputs identical to an undisturbed ``local[2]`` run's. The lost training process
    fails the job (exit 2, one line naming it); the rerun resumes training from the checkpoint.
    Mutants caught: training processes that cannot import the project from the archive (``rank_main`` handed to
    TorchDistributor as it is, not in a :class:`~cfmodel.train.task_path.TaskPathCall`: ``No module named
    'cfmodel'``, and the job ends before the test can kill rank 1); a stage whose output depends on which
    executor ran a task (partition-order ids or splits); a rerun that starts a failed train stage again
    instead of resuming it (checked: resumed_after_epoch None); the error line without the silent process
    (test_distributed pins its wording); the job's session replacing spark-submit's ``--conf
    spark.executor.extraJavaOptions`` with its own (it did, until :func:`cfmodel.session.submitted_option`:
    the executors ran without the marker)."""
    raw = generate(load_config(None, ["generate.n_users=300", "generate.n_items=200",
                                      "generate.n_ratings=12000"]).generate, str(tmp_path / "raw"))["ratings"]
    base = [f"prepare.input={raw}", "prepare.rows_per_file=4000", "prepare.row_group_mb=1",
            "score.show_examples=0", "score.titles=null", "score.formats=[parquet, nested]"]
    local = load_config(str(ROOT / "conf" / "local.yaml"), base + [
        f"prepare.output={tmp_path}/local/prepared", f"score.output={tmp_path}/local/recs"])
    prepare.run(spark, local, overwrite=False)

    python = _python_without_project(tmp_path)
    env = {**os.environ, "PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python)}
    env.pop("PYTHONPATH", None)
    log = tmp_path / "driver.log"
    with standalone_cluster(tmp_path / "cluster", workers=2) as master:
        cmd = [str(BIN / "spark-submit"), "--master", master, "--py-files", str(py_files),
               "--conf", "spark.executor.cores=1", "--conf", "spark.executor.memory=1g",
               "--conf", "spark.cores.max=2", "--conf", "spark.ui.enabled=false",
               # Executors start with the daemons' JVM options (conftest: the client compiler and the class
               # archive, for short lives) and a marker, looked for in the workers' launch commands.
               "--conf", f"spark.executor.extraJavaOptions={os.environ.get('SPARK_DAEMON_JAVA_OPTS', '')} {MARKER}",
               str(ROOT / "jobs" / "pipeline.py"), "--conf", str(ROOT / "conf" / "local.yaml"), "--run-id", "c1"]
        for s in base + [f"pipeline.output_root={tmp_path}/runs", "pipeline.stages=[prepare, train, score]",
                         # Four epochs: the training process is killed after the first, with time to spare.
                         "train.epochs=4", "train.n_factors=8", "train.progress=false",
                         # Training placed by Spark: two barrier tasks on the workers, one torchrun node each.
                         "train.distributed.processes=2", "train.distributed.local_mode=false"]:
            cmd += ["--set", s]
        deadline = time.time() + 500
        # First attempt: an executor lost in prepare (retried), then rank 1's process in train (fatal).
        with _job(cmd, log, env, tmp_path) as job:
            seen = [_kill_an_executor_in(job, log, "prepare", tmp_path / "cluster", deadline)]
            _kill_a_training_process(job, log, tmp_path / "runs" / "c1" / "train.checkpoints", tmp_path / "cluster",
                                     deadline)
            assert job.wait(timeout=max(1, deadline - time.time())) == 2, log.read_text()[-3000:]
        failed = log.read_text()
        (error,) = [line for line in failed.splitlines() if line.startswith("error: ")]
        # Rank 0 fails on the broken connection (or is stopped before it can say so): either way, one line.
        assert re.match(r"error: (training process 0 failed: .* \(process 1 ended without an error of its own: "
                        r"killed, or its executor lost; rerun to resume|distributed training failed and no "
                        r"process left an error)", error), error
        # The rerun resumes training from its checkpoint; an executor lost in score is retried.
        with _job(cmd, tmp_path / "driver2.log", env, tmp_path) as job:
            seen.append(_kill_an_executor_in(job, tmp_path / "driver2.log", "score", tmp_path / "cluster", deadline))
            assert job.wait(timeout=max(1, deadline - time.time())) == 0, (tmp_path / "driver2.log").read_text()[-3000:]
    logged = failed + (tmp_path / "driver2.log").read_text()
    # Each kill landed inside its stage: the stage had started and not yet finished.
    assert all(f"stage {s}: succeeded" not in text for s, text in zip(("prepare", "score"), seen))
    # Spark lost an executor in each stage (the kill comes as the executor starts one of the stage's tasks; a
    # short task may finish first, so a lost task is not certain) and the workers started new ones.
    assert logged.count("Lost executor") >= 2, logged[-3000:]
    workers_log = "".join(p.read_text() for p in (tmp_path / "cluster").glob("worker*.log"))
    assert workers_log.count("Asked to launch executor") >= 4, workers_log[-3000:]
    # Every executor ran with spark-submit's --conf options as well as the job's own (EXIT_ON_OOM).
    launches = [line for line in workers_log.splitlines() if "Launch command:" in line]
    assert len(launches) >= 4 and all(MARKER in line and EXIT_ON_OOM in line for line in launches), launches[:1]

    run = tmp_path / "runs" / "c1"
    for part, key in (("train", ["user_idx", "item_idx"]), ("valid", ["user_idx", "item_idx"]),
                      ("users", ["user_idx"]), ("items", ["item_idx"])):
        pd.testing.assert_frame_equal(sorted_frame(f"{run}/prepare/{part}", key),
                                      sorted_frame(f"{tmp_path}/local/prepared/{part}", key), obj=part)
    # The cluster's lists are what local[2] makes of the same model and data.
    again = load_config(str(ROOT / "conf" / "local.yaml"), base + [
        f"score.model={run}/train", f"score.data={run}/prepare", f"score.output={tmp_path}/local/recs"])
    score.run(spark, again, overwrite=False)
    got = sorted_frame(f"{run}/score/recommendations", ["user_id", "rank"])
    want = sorted_frame(f"{tmp_path}/local/recs/recommendations", ["user_id", "rank"])
    assert len(got) == 300 * 10
    pd.testing.assert_frame_equal(got.drop(columns="score"), want.drop(columns="score"))
    assert (got["score"] - want["score"]).abs().max() < 1e-5
    # The model trained on the workers: two processes, as barrier tasks on the executors (their logs stream
    # back to the driver), each rank on its own shard with the same weights after every epoch.
    meta = json.loads((run / "train" / "meta.json").read_text())
    assert meta["processes"] == 2 and meta["epochs"] == 4
    assert "Started distributed training with 2 executor processes" in logged
    assert logged.count("epoch 4: train loss") >= 2, logged[-3000:]  # each rank's (both attempts' if killed late)
    # Losing rank 1's process failed the barrier stage (Spark does not retry a barrier result stage); the
    # rerun continued from the checkpoint the first attempt wrote, both ranks from the same weights.
    assert meta["resumed_after_epoch"] >= 1 and [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]
    checks = meta["rank_checks"]
    assert checks[0]["after"] == "resume" and all(c["weights"][0] == c["weights"][1] != 0 for c in checks), checks
    assert meta["history"][-1]["valid_mse"] < meta["history"][0]["valid_mse"]
