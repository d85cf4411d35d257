"""A class-data-sharing archive for the short-lived JVMs the tests start (spark-submit, cf-* jobs, the
standalone cluster's daemons and executors).

Such a JVM spends most of its start loading and verifying Spark's classes. An archive of them, written once
by a small Spark job at exit (``-XX:ArchiveClassesAtExit``, JDK 13+), lets each later JVM map them instead
(``-XX:SharedArchiveFile``). The archive is written in the background while the first tests run; a JVM
started before it is ready, or one whose class path differs from the archive's, starts as before (the JVM
checks the archive and ignores one that does not match), so the archive changes how fast the JVMs start,
never what they run.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

# A job that loads what the stages load: SQL, a shuffle, Parquet and CSV both ways, a Python worker.
_PROBE = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
out = {out!r}
frame = spark.range(100).selectExpr("id % 7 AS k", "cast(id AS double) AS v")
frame.groupBy("k").count().write.parquet(out + "/p")
frame.write.csv(out + "/c", header=True)
spark.read.parquet(out + "/p").join(spark.read.csv(out + "/c", header=True), "k").count()
spark.sparkContext.parallelize(range(4), 2).map(lambda x: x + 1).collect()
spark.stop()
"""


class ClassArchive:
    """Writes the archive in the background from ``opts`` (the JVM options the tests give short-lived JVMs)."""

    def __init__(self, opts: str):
        self.dir = Path(tempfile.mkdtemp(prefix="cfmodel-jvm-classes-"))
        self.path = self.dir / "spark.jsa"
        script = self.dir / "probe.py"
        script.write_text(_PROBE.format(out=str(self.dir / "out")))
        env = {**os.environ, "SPARK_SUBMIT_OPTS": f"{opts} -XX:ArchiveClassesAtExit={self.path}",
               "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]", "--conf",
             "spark.ui.enabled=false", str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def options(self) -> Optional[str]:
        """The JVM option that uses the archive once it is written; None until then (or if writing failed)."""
        if self.proc.poll() == 0 and self.path.exists():
            return f"-XX:SharedArchiveFile={self.path}"
        return None

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the archive to be written (for a test that starts many JVMs)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
