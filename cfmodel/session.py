"""The SparkSession every job uses."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from pyspark.sql import SparkSession

from cfmodel.config import SparkConfig
from cfmodel.java import ensure_java_home


def launched_by_spark_submit() -> bool:
    """True inside a driver started by ``spark-submit`` (it hands the JVM gateway over)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(conf: SparkConfig) -> SparkSession:
    """Start (or reuse) a SparkSession from the ``spark`` config section.

    The master comes from the config only when the job was not launched by
    ``spark-submit``, so ``--master`` on the command line always wins; then
    ``JAVA_HOME`` is pointed at a Java 17 (:mod:`cfmodel.java`). In local
    mode the Python workers run this interpreter, so they import the same
    ``cfmodel`` as the driver; on a cluster, ship the environment (README).
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
    spark = builder.getOrCreate()
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


def _quiet_shutdown_logs(spark: SparkSession) -> None:
    # The JVM logs its shutdown hooks at INFO after Python exits, burying a job's
    # one-line error under them; those lines carry nothing a scheduler needs.
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.util.ShutdownHookManager", jvm.org.apache.logging.log4j.Level.WARN)
