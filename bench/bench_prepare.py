"""Prepare-job benchmark: wall time, rows/s and peak memory per input size.

Runs the real job through spark-submit (local[*]) on generated ratings of 1M and
10M rows, and on MovieLens ``ml-latest-small-2016`` when ``../shared/data`` has it.
Prints one table::

    .venv/bin/python bench/bench_prepare.py            # 1M and 10M rows + MovieLens small
    .venv/bin/python bench/bench_prepare.py --sizes 1000000

Peak memory is the largest sum of resident memory over the job's whole process
tree (spark-submit's JVM, which runs the local executors, and its Python workers).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cfmodel.config import GenerateConfig  # noqa: E402
from cfmodel.generate import generate  # noqa: E402
from bench.memwatch import run_watched  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small-2016" / "ratings.csv"


def _generated(out: Path, rows: int) -> Path:
    target = out / f"gen-{rows}"
    if not (target / "ratings.csv").exists():
        # MovieLens-20M-like density: about 1 user per 145 ratings, 1 movie per 740.
        cfg = GenerateConfig(n_users=max(100, rows // 145), n_items=max(200, rows // 740), n_ratings=rows, seed=1)
        generate(cfg, str(target))
    return target / "ratings.csv"


def _run_prepare(ratings: Path, out: Path, driver_memory: str) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    output = out / f"prepared-{ratings.parent.name}"
    cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[*]",
           "--driver-memory", driver_memory, str(ROOT / "jobs" / "prepare.py"),
           "--conf", str(ROOT / "conf" / "local.yaml"), "--overwrite",
           "--set", f"prepare.input={ratings}", "--set", f"prepare.output={output}"]
    result = run_watched(cmd, env=env)
    if result.returncode != 0:
        raise SystemExit(f"prepare failed on {ratings}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout[result.stdout.rindex("\n{\n"):])
    return {"rows": report["input_rows"], "seconds": result.seconds, "job_seconds": report["seconds"],
            "peak_mib": result.peak_mib, "users": report["n_users"], "items": report["n_items"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    inputs = []
    if MOVIELENS.exists():
        inputs.append(("ml-latest-small", MOVIELENS))
    else:
        print(f"(skipping MovieLens: {MOVIELENS} not found)")
    inputs += [(f"generated {n:,}", _generated(out, n)) for n in args.sizes]

    rows = []
    for name, path in inputs:
        r = _run_prepare(path, out, args.driver_memory)
        rows.append((name, r))
        print(f"done {name}: {r['seconds']:.1f}s", file=sys.stderr)

    print(f"\nprepare benchmark (spark-submit local[*], {os.cpu_count()} cores, driver {args.driver_memory})")
    print(f"{'input':<20} {'rows':>12} {'users':>9} {'items':>8} {'wall s':>8} {'job s':>7} {'rows/s':>10} "
          f"{'peak MiB':>9}")
    for name, r in rows:
        print(f"{name:<20} {r['rows']:>12,} {r['users']:>9,} {r['items']:>8,} {r['seconds']:>8.1f} "
              f"{r['job_seconds']:>7.1f} {r['rows'] / r['seconds']:>10,.0f} {r['peak_mib']:>9,.0f}")


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_prepare"):
        main()
