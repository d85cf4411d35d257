"""A full disk mid-stage: outputs on a small tmpfs the test mounts (as root), filled with ballast before the
stage runs. Each stage must fail with one line and exit code 7 (OutOfSpaceError), publish nothing, leave no
temporaries and keep the previous output; once space is freed, the rerun completes with the output an
undisturbed run makes."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cfmodel import prepare, score
from cfmodel.config import load_config
from cfmodel.errors import OutOfSpaceError
from cfmodel.model import TrainedModel
from cfmodel.train import run as train_run
from helpers import sorted_frame

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_fs(tmp_path):
    """A 24 MiB tmpfs: a device that fills, unlike the test machine's disk."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(fs: Path, leave: int, name: str = "ballast") -> Path:
    """Write a ballast file until ``fs`` has about ``leave`` bytes free; returns it (remove it to free)."""
    ballast = fs / name
    stat = os.statvfs(fs)
    free = stat.f_bavail * stat.f_frsize
    with open(ballast, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return ballast


def _left_behind(fs: Path):
    """Temporaries a failed stage would leave: ``*.tmp-*`` and ``*.old-*`` siblings."""
    return sorted(p.name for p in fs.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.mark.fault(fault='a full disk mid-train (cf-train)',
                   exit='7',
                   survives='the previous model; no temporaries',
                   rerun='same model_version as undisturbed')
def test_a_full_disk_in_train_exits_7_keeps_the_previous_model_and_the_rerun_completes(prepared_dir, small_fs,
                                                                                       tmp_path):
    """Through cf-train (the runs that meet the full disk; the others in-process). Broken versions caught:
    torch.save to a path (its full-disk error is a C++ 'unexpected pos' without errno: a traceback), a lease
    write on a full disk reported as an unwritable location (exit 2)."""
    out = small_fs / "model"
    sets = [f"train.data={prepared_dir}", "train.objective=rating", "train.n_factors=64", "train.epochs=2",
            "train.progress=false"]

    def cf_train(*extra):
        cmd = [str(BIN / "cf-train")] + [a for s in sets + list(extra) for a in ("--set", s)]
        return subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, timeout=300)

    def config(output, epochs):  # the same settings, for the runs in-process
        return load_config(None, sets + [f"train.output={output}", f"train.epochs={epochs}"]).train

    before = train_run(config(out, 2), overwrite=False)["model_version"]
    ballast = _fill(small_fs, leave=200_000)  # the lease fits; the first checkpoint (about 700 KB) does not
    full = cf_train(f"train.output={out}", "train.epochs=3")
    assert full.returncode == 7, full.stderr[-3000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: no space left on device writing "), full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    assert TrainedModel.load(str(out)).version == before and _left_behind(small_fs) == []
    # Not a byte left: the first write, the lease's, meets the full disk (still 7, not an unwritable place's 2).
    rest = _fill(small_fs, leave=0, name="rest")
    lease_full = cf_train(f"train.output={out}", "train.epochs=3")
    assert lease_full.returncode == 7, lease_full.stderr[-3000:]
    assert f"error: no space left on device writing {out}: " in lease_full.stderr, lease_full.stderr[-2000:]
    assert TrainedModel.load(str(out)).version == before

    ballast.unlink(), rest.unlink()
    train_run(config(out, 3), overwrite=True)
    undisturbed = train_run(config(tmp_path / "whole", 3), overwrite=False)
    assert TrainedModel.load(str(out)).version == undisturbed["model_version"]


@pytest.mark.fault(fault='a full disk mid-prepare and mid-score',
                   exit='7',
                   survives='the previous output; no temporaries',
                   rerun='identical output')
def test_a_full_disk_in_prepare_and_score_raises_out_of_space_and_keeps_the_previous_output(
        spark, prepared_dir, trained_model, small_fs):
    """In-process, through Spark's writers. Broken versions caught: atomic_output not classifying the
    Spark job's failure (a Py4JJavaError with a Java trace), or leaving the failed temporary behind."""
    raw = Path(prepared_dir).parent / "raw" / "ratings.csv"
    cfg = load_config(None, [f"prepare.input={raw}", f"prepare.output={small_fs}/prepared", "prepare.rows_per_file=8000",
                             f"score.model={trained_model}", f"score.data={prepared_dir}",
                             f"score.output={small_fs}/recs", "score.titles=null", "score.show_examples=0"])
    stages = [("prepared", lambda: prepare.run(spark, cfg, overwrite=True), "train", ["user_idx", "item_idx"]),
              ("recs", lambda: score.run(spark, cfg, overwrite=True), "recommendations", ["user_id", "rank"])]
    for name, run, part, key in stages:
        run()
        first = sorted_frame(small_fs / name / part, key)
        ballast = _fill(small_fs, leave=100_000)
        with pytest.raises(OutOfSpaceError) as err:
            run()
        message = str(err.value)
        assert err.value.exit_code == 7 and len(message.splitlines()) == 1, message[:2000]
        assert message.startswith(f"no space left on device writing {small_fs}/{name}: ")
        assert _left_behind(small_fs) == [] and (small_fs / name / "_SUCCESS").exists()
        pd.testing.assert_frame_equal(sorted_frame(small_fs / name / part, key), first)  # the previous output, whole
        ballast.unlink()
        run()
        pd.testing.assert_frame_equal(sorted_frame(small_fs / name / part, key), first)
