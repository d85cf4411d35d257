"""Shared fixtures: one real local[2] SparkSession, one whole pipeline run and (for the tests marked ``mlflow``)
one MLflow server for the whole test run, and every test's shared state (torch threads, the ``cfmodel`` logger,
the Spark settings jobs change) restored after it."""
from __future__ import annotations

import logging
import os
import sys

import pytest
import torch

from cfmodel.config import SparkConfig
from cfmodel.session import get_spark
from jvm_archive import ClassArchive
from mlflow_server import MLFLOW, MlflowServer

RAW_COLUMNS = ["user", "item", "rating", "timestamp", "_corrupt_record", "_source_file"]

# The short-lived JVMs tests start (each spark-submit and cf-* job's driver, the standalone cluster's daemons
# and executors) spend much of their life in the JIT: the client compiler alone starts them about 20% faster
# (a cold cf-prepare of 650 rows: 23.6 s, 18.4 s with it). The session's own JVM lives for the whole run and
# keeps both compilers (the spark fixture): with the client compiler alone the in-process tests ran slower.
# Once the class archive is written (tests/jvm_archive.py), they map Spark's classes from it too.
QUICK_JVM = "-XX:TieredStopAtLevel=1"
SHORT_LIVED = ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS")
_OURS = {var: QUICK_JVM for var in SHORT_LIVED if var not in os.environ}  # a user's own options are kept
os.environ.update(_OURS)
_ARCHIVE = []
_MLFLOW = []


def pytest_collection_finish(session):
    # Only the end-to-end tests (marked slow) start JVMs of their own: a run without them writes no archive.
    if _OURS and any(item.get_closest_marker("slow") for item in session.items):
        _ARCHIVE.append(ClassArchive(QUICK_JVM))
    # The MLflow server boots while the tests before the first one that needs it run.
    if MLFLOW.exists() and any(item.get_closest_marker("mlflow") for item in session.items):
        _MLFLOW.append(MlflowServer())


def pytest_sessionfinish(session):
    for archive in _ARCHIVE:
        archive.close()
    for server in _MLFLOW:
        server.stop()


def _use_class_archive() -> None:
    """Give the short-lived JVMs the class archive once it is written (from then on, for every test)."""
    option = _ARCHIVE[0].options() if _ARCHIVE else None
    if option is None:
        return
    for var in _OURS:
        if os.environ.get(var) == _OURS[var] and option not in _OURS[var]:
            _OURS[var] = os.environ[var] = f"{_OURS[var]} {option}"


@pytest.fixture
def class_archive():
    """For a test that starts many JVMs (the standalone cluster's): wait up to 90 s for the class archive, so
    they all map it, then give it to them."""
    if _ARCHIVE:
        _ARCHIVE[0].wait(90)
    _use_class_archive()


@pytest.fixture(scope="session")
def spark():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    ours = "SPARK_SUBMIT_OPTS" in _OURS and os.environ.get("SPARK_SUBMIT_OPTS") == _OURS["SPARK_SUBMIT_OPTS"]
    if ours:
        del os.environ["SPARK_SUBMIT_OPTS"]
    try:
        session = get_spark(SparkConfig(
            master="local[2]", app_name="cfmodel-tests", log_level="ERROR",
            conf={"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4",
                  "spark.driver.memory": "2g", "spark.ui.enabled": "false"}))
    finally:
        if ours:
            os.environ["SPARK_SUBMIT_OPTS"] = _OURS["SPARK_SUBMIT_OPTS"]
    yield session
    session.stop()


# Session settings a job sets on the Spark session it is given (prepare's read splits, score's Arrow batches).
JOB_SPARK_CONFS = ("spark.sql.files.minPartitionNum", "spark.sql.execution.arrow.maxRecordsPerBatch",
                   "spark.sql.ansi.enabled")


@pytest.fixture(scope="session")
def mlflow_server():
    """The URI of the MLflow server started at collection for the tests marked ``mlflow`` (waits up to 90 s
    for it to answer); started here for a test not so marked."""
    if not _MLFLOW:
        if not MLFLOW.exists():
            pytest.skip(f"no MLflow server: {MLFLOW} is not installed")
        _MLFLOW.append(MlflowServer())
    try:
        return _MLFLOW[0].ready(90)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
def restores_shared_state(request):
    """Put back what a test (or a job run in-process) changed for the whole process: torch's thread count
    (a tune trial sets it), the ``cfmodel`` logger (``main()`` reconfigures it), the Spark session's job settings."""
    _use_class_archive()
    threads = torch.get_num_threads()
    logger = logging.getLogger("cfmodel")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    session = request.getfixturevalue("spark") if "spark" in request.fixturenames else None
    confs = {k: session.conf.get(k, None) for k in JOB_SPARK_CONFS} if session is not None else {}
    yield
    torch.set_num_threads(threads)
    logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
    for key, value in confs.items():
        if value is None:
            session.conf.unset(key)
        else:
            session.conf.set(key, value)


@pytest.fixture
def raw_frame(spark):
    """Build a raw text frame (as read_ratings returns) from tuples of strings."""
    def make(rows, source="mem://ratings.csv"):
        full = [tuple(r) + (None,) * (5 - len(r)) + (source,) for r in rows]
        return spark.createDataFrame(full, ",".join(f"`{c}` string" for c in RAW_COLUMNS))
    return make


@pytest.fixture(scope="session")
def planted_cfg():
    from cfmodel.config import GenerateConfig
    return GenerateConfig(n_users=400, n_items=300, n_ratings=24_000, n_factors=4, noise=0.3, seed=3)


@pytest.fixture(scope="session")
def prepared_dir(spark, planted_cfg, tmp_path_factory):
    """Planted-factor ratings run through the real prepare stage, written once per session."""
    from cfmodel.config import Config, PrepareConfig
    from cfmodel.generate import generate
    from cfmodel.prepare import run

    root = tmp_path_factory.mktemp("planted")
    cfg = Config()
    cfg.prepare = PrepareConfig(input=generate(planted_cfg, str(root / "raw"))["ratings"],
                                output=str(root / "prepared"), rows_per_file=8000, row_group_mb=1)
    run(spark, cfg, overwrite=False)
    return cfg.prepare.output


@pytest.fixture(scope="session")
def trained_model(prepared_dir, tmp_path_factory):
    """A dot_bias model trained by the train stage on ``prepared_dir`` (a few epochs)."""
    from cfmodel.config import TrainConfig
    from cfmodel.train import run

    out = str(tmp_path_factory.mktemp("trained") / "model")
    run(TrainConfig(objective="rating", data=prepared_dir, output=out, n_factors=8, epochs=6, wd=0.5,
                    progress=False), overwrite=False)
    return out


@pytest.fixture(scope="session")
def pipeline_run(spark, tmp_path_factory):
    """One whole pipeline run (``r1``: generate, prepare, train, score, evaluate with helpers.pipeline_sets) that
    test_pipeline, test_tracking and test_tune start from, each on its own copy (helpers.OwnRoot): (the
    directory holding ``runs/`` and ``gen/``, the run's manifest)."""
    from cfmodel.pipeline import run_pipeline
    from helpers import pipeline_config

    tmp = tmp_path_factory.mktemp("pipeline")
    return tmp, run_pipeline(spark, pipeline_config(tmp), "r1")


# -- the fault matrix ---------------------------------------------------------------------------------------
# Tests marked ``@pytest.mark.fault(fault, exit, survives, rerun)`` inject one fault on real processes or
# files; the run ends with their matrix: the fault, the exit code the job ends with, what survived, what the
# rerun gives, and whether the test that checks it passed.
_FAULTS = []


def pytest_runtest_makereport(item, call):
    marker = item.get_closest_marker("fault")
    if marker is not None and call.when == "call":
        outcome = "passed" if call.excinfo is None else "FAILED"
        _FAULTS.append((marker.kwargs, f"{item.module.__name__}::{item.originalname}", outcome))


def pytest_terminal_summary(terminalreporter):
    if not _FAULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"fault matrix ({len(_FAULTS)} faults)")
    write("| fault | exit code | what survived | rerun | test | |")
    write("|---|---|---|---|---|---|")
    for kw, test, outcome in _FAULTS:
        write(f"| {kw['fault']} | {kw['exit']} | {kw['survives']} | {kw['rerun']} | {test} | {outcome} |")
