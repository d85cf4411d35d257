"""The score job end to end through spark-submit, on a model trained by cf-train."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pandas as pd

from cfmodel.config import load_config
from cfmodel.errors import OutputExistsError
from cfmodel.score import run as score_run
from cfmodel.train import main as train_main

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _score(*args):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [str(BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           str(ROOT / "jobs" / "score.py"), "--conf", str(ROOT / "conf" / "local.yaml"),
           "--set", "spark.conf.spark.sql.shuffle.partitions=4", "--set", "score.titles=null", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_score_job_writes_every_format_and_excludes_rated(spark, prepared_dir, tmp_path, capsys):
    model = tmp_path / "model"
    assert train_main(["--set", f"train.data={prepared_dir}", "--set", f"train.output={model}", "--set",
                       "train.epochs=2", "--set", "train.n_factors=8", "--set", "train.progress=false"]) == 0
    capsys.readouterr()
    out = tmp_path / "recs"
    # Titles as MovieLens 100K ships them (u.item: latin-1, '|', no header): the case that once failed the job.
    movies = pd.read_csv(Path(prepared_dir).parent / "raw" / "movies.csv")
    uitem = tmp_path / "ml-100k" / "u.item"
    uitem.parent.mkdir()
    uitem.write_bytes("".join(f"{m}|{t}|01-Jan-1995||http://x|0|1\n" for m, t in zip(movies.movieId, movies.title))
                      .encode("latin-1"))
    args = ["--set", f"score.model={model}", "--set", f"score.data={prepared_dir}", "--set", f"score.output={out}",
            "--set", "score.formats=[parquet, nested, csv, jsonl]", "--set", "score.top_n=5",
            "--set", "score.show_examples=2", "--set", f"score.titles={uitem}"]
    result = _score(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shown = [line for line in result.stdout.splitlines() if line.startswith("   1. ")]
    assert len(shown) == 2 and all("Synthetic Movie" in line for line in shown), result.stdout[-2000:]
    report = json.loads(result.stdout[result.stdout.index("\n{\n"):result.stdout.index("\n}\n") + 3])
    users = pd.read_parquet(f"{prepared_dir}/users")
    assert report["users_scored"] == len(users) and report["fallback_users"] == 0
    assert report["rows_written"] == 5 * len(users)

    long = pd.read_parquet(out / "recommendations")
    assert list(long.columns) == ["user_id", "rank", "item_id", "score", "fallback", "source", "model_version"]
    assert long["model_version"].nunique() == 1 and len(long["model_version"].iloc[0]) == 12
    assert long.groupby("user_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    assert long["score"].between(0.0, 5.5).all()
    rated = pd.concat([pd.read_parquet(f"{prepared_dir}/{s}", columns=["user_id", "item_id"])
                       for s in ("train", "valid")])
    clash = long.merge(rated, on=["user_id", "item_id"])
    assert clash.empty, clash.head()

    nested = pd.read_parquet(out / "nested")
    assert list(nested.columns) == ["userId", "recommendations"]
    first = nested.sort_values("userId").iloc[0]
    expected = long[long.user_id == first.userId].sort_values("rank")["item_id"].tolist()
    assert [r["movieId"] for r in first.recommendations] == expected

    csv = pd.concat(pd.read_csv(p) for p in sorted((out / "csv").glob("*.csv")))
    assert len(csv) == len(long) and list(csv.columns)[:3] == ["user_id", "rank", "item_id"]
    lines = [json.loads(line) for p in sorted((out / "jsonl").glob("*.json")) for line in p.read_text().splitlines()]
    assert len(lines) == len(users) and len(lines[0]["recommendations"]) == 5
    assert (out / "_SUCCESS").exists()
    assert len(list((out / "recommendations").glob("*.parquet"))) <= 4  # score.output_files

    # Run again on the same output: refused before anything is written (in-process; the spark-submit path turns
    # such an error into its one line and exit code as test_prepare_job checks).
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), [a for a in args if a != "--set"] + ["score.titles=null"])
    with pytest.raises(OutputExistsError) as refused:
        score_run(spark, cfg, overwrite=False)
    assert refused.value.exit_code == 2 and str(refused.value).startswith(f"output already exists: {out} ")
    assert len(long) == len(pd.read_parquet(out / "recommendations"))
