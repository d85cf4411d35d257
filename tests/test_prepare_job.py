"""The prepare job end to end through the real spark-submit, as a scheduler runs it."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cfmodel.config import GenerateConfig
from cfmodel.generate import generate

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _submit(*args, script="jobs/prepare.py"):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [str(BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           str(ROOT / script), "--conf", str(ROOT / "conf" / "local.yaml"),
           "--set", "spark.conf.spark.sql.shuffle.partitions=4", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    return generate(GenerateConfig(n_users=150, n_items=120, n_ratings=4000, seed=11), str(d))["ratings"]


def _error_lines(result):
    # spark-submit merges the Python driver's stderr into its own stdout.
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error: ")]


def _report(result):
    return json.loads(result.stdout[result.stdout.rindex("\n{\n"):])


def test_spark_submit_end_to_end(demo_csv, tmp_path):
    out = tmp_path / "prepared"
    args = ["--set", f"prepare.input={demo_csv}", "--set", f"prepare.output={out}"]
    first = _submit(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    report = _report(first)
    assert report["reconciled"] is True and report["input_rows"] == 4000
    assert report["train_rows"] + report["valid_rows"] == 4000
    for sub in ("train", "valid", "users", "items", "quarantine", "_SUCCESS", "meta.json", "report.json"):
        assert (out / sub).exists(), sub
    meta = json.loads((out / "meta.json").read_text())
    file_digest = hashlib.sha256(Path(demo_csv).read_bytes()).hexdigest()
    assert meta["input"]["checksum"] == "content"
    assert meta["input"]["sha256"] == hashlib.sha256(f"ratings.csv:{file_digest}\n".encode()).hexdigest()
    assert meta["n_users"] == 150 and meta["split"] == {"method": "random", "valid_fraction": 0.2, "seed": 42,
                                                         "cold_start": "train", "split_time": None}
    # local.yaml leaves the scale null: inferred from the demo's half stars.
    assert meta["rating"] == {"min": 0.5, "max": 5.0, "step": 0.5, "inferred": ["min", "max", "step"]}
    assert meta["feedback"] == "explicit" and meta["id_types"] == {"user": "int", "item": "int"}
    assert "resolved config" in first.stdout + first.stderr
    # spark-submit started the driver JVM without -XX:+ExitOnOutOfMemoryError: the job says how to add it.
    assert "the driver JVM runs without -XX:+ExitOnOutOfMemoryError" in first.stdout + first.stderr
    # An existing output (exit 2) and --overwrite are the same code in-process: test_prepare's atomic write
    # and test_full_disk's overwrites; here the submit path itself.
    assert not [p for p in tmp_path.iterdir() if p.name != "prepared"]  # no temporary siblings left


def test_bad_input_exit_codes(tmp_path):
    missing = _submit("--set", f"prepare.input={tmp_path}/nope.csv", "--set", f"prepare.output={tmp_path}/o")
    assert missing.returncode == 2
    assert _error_lines(missing) == [f"error: input not found: {tmp_path}/nope.csv"]

    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,1,4,1\n1,2,abc,1\n")
    gate = _submit("--set", f"prepare.input={bad}", "--set", f"prepare.output={tmp_path}/o")
    assert gate.returncode == 3
    [line] = _error_lines(gate)
    assert "quarantined 1 of 2 rows (50.0%), over the limit of 5.0%" in line
    assert not (tmp_path / "o").exists()
