"""Data-parallel training through TorchDistributor: quality and throughput against one process.

    .venv/bin/python bench/bench_distributed.py                 # both tables
    .venv/bin/python bench/bench_distributed.py --skip-lesson   # throughput only

Table 1 (needs ../shared/data/ml-latest-small-2016): the ``rating`` objective
with the shipped config on the lesson's split (random 20% validation, seed 42),
trained in the job's process and on 1 and 2 processes (``train.distributed``,
local mode, gloo), all through the Petastorm loader: validation MSE and its
difference from the single process's.

Table 2: one epoch on ``--ratings`` generated ratings (``--users`` × ``--items``
tables) per setting: ratings/s, epoch seconds, milliseconds a step, and the
bytes each process all-reduces a step (dense: every weight; sparse: the batch's
rows and their indices, gathered from every process). Every run is a fresh
``cf-train`` process; wall seconds include starting the processes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_train import _prepare  # noqa: E402
from bench.memwatch import run_watched  # noqa: E402
from cfmodel.config import GenerateConfig, SparkConfig  # noqa: E402
from cfmodel.generate import generate  # noqa: E402

MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small-2016" / "ratings.csv"
CF_TRAIN = str(Path(sys.executable).parent / "cf-train")


def _train(data: str, out: Path, processes: int, *overrides: str) -> dict:
    cmd = [CF_TRAIN, "--conf", str(ROOT / "conf" / "local.yaml"), "--overwrite", "--set", f"train.data={data}",
           "--set", f"train.output={out}", "--set", "train.progress=false", "--set", "train.loader=petastorm",
           "--set", f"train.distributed.processes={processes}", *[a for o in overrides for a in ("--set", o)]]
    done = run_watched(cmd, env=dict(os.environ))
    if done.returncode != 0:
        # torchrun's own output (a rank's traceback, a rendezvous error) is on stdout: show both.
        raise SystemExit(f"cf-train failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    # The result is the last JSON object on stdout (TorchDistributor also copies the processes' logs there).
    report = json.loads(done.stdout[done.stdout.rindex("\n{\n") + 1:] if "\n{\n" in done.stdout else done.stdout)
    meta = json.loads((out / "meta.json").read_text())
    return {**report, "wall": done.seconds, "peak_mib": done.peak_mib, "meta": meta}


def _allreduce_bytes(meta: dict, processes: int) -> int:
    """Bytes one process sends into the all-reduce of one step."""
    n_factors, batch = meta["config"]["n_factors"], meta["config"]["batch_size"]
    if meta["row_updates"] == "dense":
        return 4 * (meta["n_users"] + meta["n_items"]) * (n_factors + 1)
    # Gloo's sparse all-reduce gathers every process's rows: float32 values and int64 indices, both sides.
    return 2 * max(1, processes) * (batch // max(1, processes)) * (4 * n_factors + 4 + 2 * 8)


def lesson_table(spark, work: Path) -> None:
    data = _prepare(spark, str(MOVIELENS), work / "ml-small")
    print("\nMovieLens small, lesson split, objective rating, shipped config (8 epochs, one_cycle), petastorm loader")
    print(f"{'processes':>10} {'valid MSE':>10} {'vs in-process':>14} {'ratings/s':>10} {'wall s':>7}")
    base = None
    for processes in (0, 1, 2):
        got = _train(data, work / f"lesson-{processes}", processes, "train.objective=rating")
        base = got["valid_mse"] if base is None else base
        print(f"{processes or 'in-proc':>10} {got['valid_mse']:>10.5f} {got['valid_mse'] - base:>+14.5f} "
              f"{got['ratings_per_s']:>10,} {got['wall']:>7.1f}")


def throughput_table(spark, work: Path, ratings: int, users: int, items: int) -> None:
    raw = work / f"gen-{ratings}"
    if not (raw / "ratings.csv").exists():
        generate(GenerateConfig(n_users=users, n_items=items, n_ratings=ratings, seed=7), str(raw))
    data = _prepare(spark, str(raw / "ratings.csv"), work / f"gen-{ratings}-prepared")
    print(f"\nOne epoch, {ratings:,} generated ratings, {users:,} x {items:,} tables, objective rating, batch 1024")
    print(f"{'processes':>10} {'updates':>8} {'ratings/s':>10} {'epoch s':>8} {'ms/step':>8} "
          f"{'allreduce/step':>15} {'wall s':>7} {'peak MiB':>9}")
    for processes in (0, 1, 2):
        for updates in ("dense", "sparse"):
            got = _train(data, work / "tp", processes, "train.objective=rating", "train.epochs=1",
                         f"train.row_updates={updates}")
            epoch = got["meta"]["history"][0]
            steps = -(-epoch["ratings_per_s"] * epoch["seconds"] // 1024)
            sent = _allreduce_bytes(got["meta"], processes) if processes > 1 else 0
            print(f"{processes or 'in-proc':>10} {updates:>8} {epoch['ratings_per_s']:>10,.0f} {epoch['seconds']:>8.2f} "
                  f"{1000 * epoch['seconds'] / steps:>8.2f} {sent / 2**20:>12.2f} MiB {got['wall']:>7.1f} "
                  f"{got['peak_mib']:>9,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-lesson", action="store_true")
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cfmodel-bench-distributed"))
    args = parser.parse_args()
    from cfmodel.session import spark_session

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with spark_session(SparkConfig(master="local[2]", log_level="ERROR",
                                   conf={"spark.driver.memory": "2g", "spark.ui.enabled": "false"})) as spark:
        if not args.skip_lesson and MOVIELENS.exists():
            lesson_table(spark, work)
        throughput_table(spark, work, args.ratings, args.users, args.items)


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_distributed"):
        main()
