"""Install the project's wheel as a library into a fresh virtual environment that already has its own torch,
of another minor version than the pinned one, and run the demo's stages there (generate, prepare, train,
score) from the installed console scripts.

What it shows: ``pip install cfmodel-*.whl`` without the constraints file keeps a torch that falls inside
``setup.py``'s range (no reinstall), and the pipeline's stages run on it. The environment lives outside the
checkout and its commands run from another directory, so nothing is imported from the checkout.

    make bench-install [TORCH=torch==2.14.1]     # writes bench/results/bench_install.md

It needs the package index (or the local wheel directories pip is configured with) for torch and the
project's dependencies; several GB of disk for a CUDA build of torch. Minutes, mostly pip.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import recorded  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, timeout=1800, env=None):
    started = time.time()
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n{done.stdout[-2000:]}"
                         f"{done.stderr[-3000:]}")
    return done, time.time() - started


def _torch_version(python: Path, cwd: Path) -> str:
    return _run([python, "-c", "import torch; print(torch.__version__)"], cwd)[0].stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", default="torch==2.14.1", help="the runtime's own torch, installed first")
    parser.add_argument("--keep", action="store_true", help="keep the environment (printed) afterwards")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cfmodel-install-"))
    rows, ok, before = [], False, "?"
    try:
        dist = work / "dist"
        _, sec = _run(["make", "-s", "dist", f"DIST={dist}"], ROOT)
        wheel = next(dist.glob("cfmodel-*-py3-none-any.whl"))
        rows.append(("build the wheel (make dist)", f"{sec:.0f} s", wheel.name))
        venv = work / "venv"
        python = venv / "bin" / "python"
        _run([sys.executable, "-m", "venv", venv], work)
        _, sec = _run([python, "-m", "pip", "install", "-q", args.torch], work)
        before = _torch_version(python, work)
        rows.append((f"the runtime's torch (pip install {args.torch})", f"{sec:.0f} s", before))
        _, sec = _run([python, "-m", "pip", "install", "-q", wheel], work)
        after = _torch_version(python, work)
        rows.append(("pip install the wheel, no constraints", f"{sec:.0f} s",
                     f"torch {after}: {'kept' if after == before else 'REPLACED'}"))
        _stages(venv, work, rows)
        ok = after == before  # every step raised if it failed
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("| step | time | result |\n|---|---:|---|")
    for step, sec, result in rows:
        print(f"| {step} | {sec} | {result} |")
    print(f"\n{'PASS' if ok else 'FAIL'}: the wheel installed beside the runtime's torch {before} and ran the demo's "
          "stages from its console scripts" + ("" if not args.keep else f" (kept: {work})"))
    if not ok:
        raise SystemExit(1)


def _stages(venv: Path, work: Path, rows) -> None:
    """generate -> prepare -> train -> score with the installed console scripts, run outside the checkout."""
    bin_ = venv / "bin"
    env = {**os.environ, "PYSPARK_PYTHON": str(bin_ / "python"),
           "PYSPARK_DRIVER_PYTHON": str(bin_ / "python")}
    env.pop("PYTHONPATH", None)
    data = work / "data"
    conf = ["--set", "spark.master=local[2]"]
    steps = [
        ("cf-generate", ["--set", f"generate.output={data}/raw", "--set", "generate.n_users=300", "--set",
                         "generate.n_items=200", "--set", "generate.n_ratings=15000"]),
        ("cf-prepare", conf + ["--set", f"prepare.input={data}/raw/ratings.csv", "--set",
                               f"prepare.output={data}/prepared"]),
        ("cf-train", ["--set", f"train.data={data}/prepared", "--set", f"train.output={data}/model", "--set",
                      "train.epochs=3", "--set", "train.progress=false"]),
        ("cf-score", conf + ["--set", f"score.model={data}/model", "--set", f"score.data={data}/prepared", "--set",
                             f"score.output={data}/recs", "--set", "score.titles=null"]),
    ]
    for script, argv in steps:
        done, sec = _run([bin_ / script, *argv], work, env=env)
        rows.append((script, f"{sec:.0f} s", "ok"))
    meta = json.loads((data / "model" / "meta.json").read_text())
    rows.append(("the trained model's meta.json", "", f"torch {meta['versions']['torch']}, valid RMSE "
                                                     f"{meta['valid_rmse']}"))


if __name__ == "__main__":
    with recorded("bench_install"):
        main()
