"""The SparkSession every job uses."""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

from pyspark.sql import SparkSession

from cfmodel.config import SparkConfig
from cfmodel.java import ensure_java_home


# A JVM out of memory must end the job, not hang it. In local mode an OutOfMemoryError in the thread
# that feeds a Python worker kills only that thread, and the task then waits on the worker's socket for
# ever (seen with a 557 MB input file); with this flag the JVM exits, and the Python driver with it.
EXIT_ON_OOM = "-XX:+ExitOnOutOfMemoryError"
JAVA_OPTION_KEYS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")
LOG = logging.getLogger(__name__)


def with_exit_on_oom(options: str) -> str:
    """``options`` (a JVM option string) with :data:`EXIT_ON_OOM` added unless already there."""
    return options if EXIT_ON_OOM in options.split() else f"{options} {EXIT_ON_OOM}".strip()


def launched_by_spark_submit() -> bool:
    """True inside a driver started by ``spark-submit`` (it hands the JVM gateway over)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def submitted_option(key: str) -> str:
    """What ``spark-submit`` was given for ``key`` (``--conf``, ``--driver-java-options``, spark-defaults.conf);
    "" outside spark-submit. Setting the key on the session builder replaces that value, so :func:`get_spark`
    keeps it (after the config file's, so the command line wins, as ``--master`` does)."""
    if not launched_by_spark_submit():
        return ""
    from pyspark import SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM, which holds them as system properties
    return SparkContext._jvm.java.lang.System.getProperty(key) or ""


def get_spark(conf: SparkConfig) -> SparkSession:
    """Start (or reuse) a SparkSession from the ``spark`` config section.

    The master comes from the config only when the job was not launched by
    ``spark-submit``, so ``--master`` on the command line always wins; then
    ``JAVA_HOME`` is pointed at a Java 17 (:mod:`cfmodel.java`). In local
    mode the Python workers run this interpreter, so they import the same
    ``cfmodel`` as the driver; on a cluster, ship the environment (docs/operations.md). The JVM options
    keys get :data:`EXIT_ON_OOM` added to the config file's and spark-submit's own (:func:`submitted_option`).
    """
    builder = SparkSession.builder.appName(conf.app_name)
    if not launched_by_spark_submit():  # spark-submit has started the JVM already
        ensure_java_home()
        builder = builder.master(conf.master)
        if conf.master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Our timestamps and hashes must not depend on the machine's zone.
    builder = (builder.config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    for key, value in conf.conf.items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    for key in JAVA_OPTION_KEYS:
        options = f"{conf.conf.get(key, '')} {submitted_option(key)}".strip()
        builder = builder.config(key, with_exit_on_oom(options))
    spark = builder.getOrCreate()
    _check_exit_on_oom(spark)
    spark.sparkContext.setLogLevel(conf.log_level)
    _quiet_shutdown_logs(spark)
    return spark


@contextmanager
def spark_session(conf: SparkConfig) -> Iterator[SparkSession]:
    """:func:`get_spark` for the length of a ``with`` block, stopped however the block ends."""
    spark = get_spark(conf)
    try:
        yield spark
    finally:
        spark.stop()


def _check_exit_on_oom(spark: SparkSession) -> None:
    # Under spark-submit the driver JVM started before this code ran: say so if it lacks the flag.
    jvm = spark.sparkContext._jvm
    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    if EXIT_ON_OOM not in args:
        LOG.warning("the driver JVM runs without %s: an out-of-memory error in it can hang the job instead "
                    "of failing it; pass --driver-java-options=%s to spark-submit", EXIT_ON_OOM, EXIT_ON_OOM)


def _quiet_shutdown_logs(spark: SparkSession) -> None:
    # The JVM logs its shutdown hooks at INFO after Python exits, burying a job's
    # one-line error under them; those lines carry nothing a scheduler needs.
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.util.ShutdownHookManager", jvm.org.apache.logging.log4j.Level.WARN)
