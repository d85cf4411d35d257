"""Behaviour check for refactors: run the pipeline on fixed data, then compare two such runs.

    .venv/bin/python bench/compare_runs.py run OUT        # demo data and MovieLens small -> OUT/{demo,movielens}
    .venv/bin/python bench/compare_runs.py compare A B    # every Parquet table and metric of A equals B's

``run`` drives ``jobs/pipeline.py`` through ``spark-submit`` (the entry point
that every version of the project has), once on the demo data
(``conf/local.yaml``, generated) and once on
``../shared/data/ml-latest-small-2016`` when present, each with prepare,
train, score and evaluate. Run it on the old checkout and on the new one.

``compare`` reads every Parquet directory of both runs and compares the rows
(sorted, so file layout does not matter), then ``metrics.json`` and each
stage's ``report.json``/``meta.json`` numbers, ignoring what may legitimately
differ: timings, paths, library versions and ``model_version`` (whose
definition changed from a file hash to a digest of the weights). Numbers in
the JSON documents compare equal within a relative 1e-9: Spark sums the
per-user ranking metrics in an order that varies between runs, which moves
the last bits (seen: 1e-17). Table rows compare exactly. It prints one line
per compared item and exits 1 on any difference.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small-2016"
# Keys whose values are expected to differ between two runs of the same config.
VOLATILE = {"seconds", "fit_seconds", "wall", "ratings_per_s", "output", "path", "model", "data", "started",
            "finished", "run_dir", "versions", "git_revision", "config", "model_version", "prepared", "device",
            "trained", "history", "prepared_meta", "model_args", "stage", "report", "ended", "pid", "host"}


def _pipeline(out: Path, name: str, sets: list, confs: list = ()) -> None:
    python = Path(sys.executable)
    env = {**os.environ, "PYSPARK_PYTHON": str(python), "PYSPARK_DRIVER_PYTHON": str(python)}
    cmd = [str(python.parent / "spark-submit"), "--master", "local[2]", "jobs/pipeline.py",
           "--conf", "conf/local.yaml", *confs, "--run-id", name, "--set", f"pipeline.output_root={out}",
           "--set", "train.progress=false", "--set", "score.show_examples=0", *[a for s in sets for a in ("--set", s)]]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def run(out: Path) -> None:
    """Both reference runs under ``out``."""
    # The demo's generate stage: in conf/local.yaml until conf/demo.yaml took it over.
    demo = ["--conf", "conf/demo.yaml"] if (ROOT / "conf" / "demo.yaml").exists() else []
    _pipeline(out, "demo", [f"generate.output={out}/gen"], demo)
    if (MOVIELENS / "ratings.csv").exists():
        _pipeline(out, "movielens", [f"prepare.input={MOVIELENS / 'ratings.csv'}",
                                     f"evaluate.titles={MOVIELENS / 'movies.csv'}", "score.titles=null",
                                     "pipeline.stages=[prepare, train, score, evaluate]"])


def _parquet_dirs(run_dir: Path) -> list:
    found = {p.parent for p in run_dir.rglob("*.parquet")}
    return sorted(str(d.relative_to(run_dir)) for d in found if ".tmp-" not in str(d))


def _table(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path).drop(columns=["model_version"], errors="ignore")
    for col in frame.columns:  # lists (factors, nested lists) compare as text
        if frame[col].dtype == object:
            frame[col] = frame[col].map(lambda v: json.dumps(v.tolist() if hasattr(v, "tolist") else v,
                                                             default=str))
    return frame.sort_values(list(frame.columns), ignore_index=True)


def _numbers(obj, prefix=""):
    """Flatten a JSON document to ``{dotted key: value}``, without the volatile keys."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k not in VOLATILE:
                out.update(_numbers(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1e-300)
    return x == y


def compare(a: Path, b: Path) -> int:
    """Compare every run under ``a`` with its namesake under ``b``; returns the number of differences."""
    bad = 0
    for run_dir in sorted(p for p in a.iterdir() if (p / "manifest.json").exists()):
        other = b / run_dir.name
        dirs_a, dirs_b = _parquet_dirs(run_dir), _parquet_dirs(other)
        if dirs_a != dirs_b:
            print(f"DIFF {run_dir.name}: tables {sorted(set(dirs_a) ^ set(dirs_b))} in one run only")
            bad += 1
        for rel in sorted(set(dirs_a) & set(dirs_b)):
            ta, tb = _table(run_dir / rel), _table(other / rel)
            same = ta.shape == tb.shape and list(ta.columns) == list(tb.columns) and ta.equals(tb)
            print(f"{'same' if same else 'DIFF'} {run_dir.name}/{rel}: {ta.shape[0]} rows")
            bad += not same
        for doc in sorted(run_dir.rglob("*.json")):
            rel = doc.relative_to(run_dir)
            if doc.name == "manifest.json" or ".tmp-" in str(rel) or not (other / rel).exists():
                continue
            na, nb = _numbers(json.loads(doc.read_text())), _numbers(json.loads((other / rel).read_text()))
            diffs = {k: (na.get(k), nb.get(k)) for k in set(na) | set(nb) if not _same(na.get(k), nb.get(k))}
            print(f"{'same' if not diffs else 'DIFF'} {run_dir.name}/{rel}: {len(na)} values"
                  + (f" {dict(list(diffs.items())[:5])}" if diffs else ""))
            bad += bool(diffs)
    print(f"{bad} difference(s)")
    return bad


def main(argv: list) -> int:
    if len(argv) == 2 and argv[0] == "run":
        run(Path(argv[1]).resolve())
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        return 1 if compare(Path(argv[1]), Path(argv[2])) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
