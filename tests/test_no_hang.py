"""A JVM out of memory ends the job with exit code 5 instead of hanging it.

The case that hung before: in local mode, an OutOfMemoryError in the JVM thread
that feeds a Python worker killed only that thread, and the task waited on the
worker's socket for ever (a 557 MB input hashed in one Python task). Here one
400 MB line goes to a Python worker of a 512 MB driver: without
``-XX:+ExitOnOutOfMemoryError`` (cfmodel.session) this run never ends.
"""
import subprocess
import sys
import time

import pytest

from cfmodel.session import EXIT_ON_OOM, with_exit_on_oom

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

SCRIPT = """
import sys
from cfmodel.cli import run_main
from cfmodel.config import SparkConfig
from cfmodel.session import spark_session

def body(args):
    conf = SparkConfig(master="local[1]", log_level="ERROR",
                       conf={"spark.driver.memory": "512m", "spark.ui.enabled": "false"})
    with spark_session(conf) as spark:
        spark.sparkContext.textFile(args[0]).map(len).collect()
    return 0

sys.exit(run_main(body, sys.argv[1:]))
"""


@pytest.mark.fault(fault='out of memory in a Python thread feeding the JVM',
                   exit='non-zero, no hang',
                   survives='-',
                   rerun='-')
def test_out_of_memory_in_a_python_feeding_thread_ends_the_job(tmp_path):
    line = tmp_path / "one-line.txt"
    with open(line, "wb") as fh:
        for _ in range(40):
            fh.write(b"x" * 10_000_000)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SCRIPT, "file://" + str(line)], capture_output=True, text=True,
                          timeout=240)
    assert time.monotonic() - started < 240
    assert done.returncode == 5, done.stderr[-3000:]
    assert "OutOfMemoryError" in done.stdout + done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [errors[0]] and "Spark driver JVM exited" in errors[0]


def test_the_flag_joins_the_users_jvm_options_once():
    assert with_exit_on_oom("") == EXIT_ON_OOM
    assert with_exit_on_oom("-Dlog4j.configurationFile=x") == f"-Dlog4j.configurationFile=x {EXIT_ON_OOM}"
    assert with_exit_on_oom(f"-Xss4m {EXIT_ON_OOM}") == f"-Xss4m {EXIT_ON_OOM}"
