"""Faults a scheduler meets: a second live attempt, a killed holder, an overwrite cut between its renames,
damaged artefacts. Each is injected on real processes and files; each must end in a one-line error (with
its exit code) or a recovery, never a lost output."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from cfmodel import lease as lease_module
from cfmodel.errors import InputError
from cfmodel.lease import LeaseHeldError, lease, lease_path
from cfmodel.storage import LocalStorage, atomic_output


def _write_lease(path, **fields):
    record = {"host": socket.gethostname(), "pid": os.getpid(), "token": "theirs", "started": time.time(),
              "heartbeat": time.time(), **fields}
    with open(lease_path(str(path)), "w", encoding="utf-8") as fh:
        json.dump(record, fh)


@pytest.fixture
def live_process():
    """Another live process on this host (the first attempt, still running)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.fault(fault='a second attempt on an output while the first is live',
                   exit='6',
                   survives="the live attempt's temporaries",
                   rerun='-')
def test_a_second_attempt_meets_the_live_lease_and_leaves_its_work_alone(tmp_path, live_process):
    """Broken version caught: the second attempt removing the live attempt's temporaries (as every stage
    did before leases), or writing beside it."""
    out = tmp_path / "out"
    live_tmp = tmp_path / "out.tmp-first"
    live_tmp.mkdir()
    _write_lease(out, pid=live_process.pid)
    with pytest.raises(LeaseHeldError, match=rf"{out} is being written by another attempt \(host .*, pid "
                                             rf"{live_process.pid}") as err:
        with atomic_output(LocalStorage(), str(out), overwrite=True):
            pytest.fail("the body must not run")
    assert err.value.exit_code == 6 and len(str(err.value).splitlines()) == 1
    assert live_tmp.is_dir() and not out.exists()


@pytest.mark.fault(fault='the lease holder was killed',
                   exit='0 (taken over)',
                   survives='-',
                   rerun="removes the holder's temporaries, then runs")
def test_a_killed_holders_lease_is_taken_over_and_only_then_its_temporaries_removed(tmp_path):
    """A holder killed with -9 leaves its lease and temporaries; the rerun takes over and publishes."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    (tmp_path / "out.tmp-killed").mkdir()
    _write_lease(out, pid=dead.pid)
    with atomic_output(LocalStorage(), str(out), overwrite=True) as tmp:
        held = json.loads(open(lease_path(str(out))).read())
        assert held["pid"] == os.getpid() and held["token"] != "theirs"
        assert not (tmp_path / "out.tmp-killed").exists()
        os.makedirs(tmp)
        open(os.path.join(tmp, "part"), "w").write("new")
    assert (out / "_SUCCESS").exists() and (out / "part").read_text() == "new"
    assert not os.path.exists(lease_path(str(out)))  # released


def test_another_hosts_lease_lives_until_its_heartbeat_is_older_than_the_ttl(tmp_path):
    out = tmp_path / "out"
    _write_lease(out, host="other-node", pid=1, heartbeat=time.time() - 5)
    with pytest.raises(LeaseHeldError, match="host other-node, pid 1"):
        with lease(LocalStorage(), str(out)):
            pass
    _write_lease(out, host="other-node", pid=1, heartbeat=time.time() - lease_module.TTL_S - 1)
    with lease(LocalStorage(), str(out)) as mine:
        assert mine["host"] == socket.gethostname()


def test_the_holder_keeps_its_lease_alive_with_heartbeats(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.05)
    out = tmp_path / "out"
    with lease(LocalStorage(), str(out)) as mine:
        time.sleep(0.3)
        beat = json.loads(open(lease_path(str(out))).read())
        assert beat["token"] == mine["token"] and beat["heartbeat"] > mine["heartbeat"]


class _CutAfterFirstRename(LocalStorage):
    """A process killed between an overwrite's two renames."""

    renames = 0

    def rename(self, src, dst):
        self.renames += 1
        if self.renames == 2:
            raise KeyboardInterrupt("killed")
        super().rename(src, dst)


@pytest.mark.fault(fault="a crash between an overwrite's renames",
                   exit='-',
                   survives='the old output (moved aside)',
                   rerun='puts the old output back')
def test_an_overwrite_cut_between_its_renames_loses_neither_copy_and_the_rerun_restores_the_old(tmp_path):
    """Broken version caught: delete-then-rename (a crash between them lost both the old and the new)."""
    out = tmp_path / "out"
    with atomic_output(LocalStorage(), str(out), overwrite=False) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "part"), "w").write("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(_CutAfterFirstRename(), str(out), overwrite=True) as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "part"), "w").write("new")
    olds = [p for p in tmp_path.iterdir() if p.name.startswith("out.old-")]
    assert not out.exists() and len(olds) == 1 and (olds[0] / "part").read_text() == "old"
    with atomic_output(LocalStorage(), str(out), overwrite=True) as tmp:
        assert (out / "part").read_text() == "old"  # restored before the new attempt writes
        os.makedirs(tmp)
        open(os.path.join(tmp, "part"), "w").write("newer")
    assert (out / "part").read_text() == "newer" and [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.slow
@pytest.mark.fault(fault='a second pipeline attempt of a live run id',
                   exit='6',
                   survives='the live run, untouched',
                   rerun='-')
def test_a_second_pipeline_attempt_of_a_live_run_stops_before_touching_it(spark, tmp_path, live_process):
    from helpers import pipeline_config

    from cfmodel.pipeline import run_pipeline

    cfg = pipeline_config(tmp_path)
    (tmp_path / "runs").mkdir()
    _write_lease(tmp_path / "runs" / "r1", pid=live_process.pid)
    with pytest.raises(LeaseHeldError, match=r"runs/r1 is being written by another attempt"):
        run_pipeline(spark, cfg, "r1")
    assert not (tmp_path / "runs" / "r1").exists() and not (tmp_path / "gen").exists()


@pytest.mark.fault(fault='a truncated model.pt', exit='2', survives='-', rerun='retrain')
def test_a_truncated_model_file_is_a_one_line_error_naming_it(trained_model, tmp_path):
    """Broken version caught: torch's multi-line zip traceback."""
    import shutil

    from cfmodel.model import TrainedModel

    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    data = (copy / "model.pt").read_bytes()
    (copy / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"model.pt: not a readable model file \(.*\); retrain") as err:
        TrainedModel.load(str(copy))
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.fault(fault='a train output without item_factors/ or _SUCCESS',
                   exit='2',
                   survives='-',
                   rerun='retrain')
def test_a_train_output_missing_a_factor_table_or_its_commit_is_refused_by_score(spark, trained_model,
                                                                                prepared_dir, tmp_path):
    import shutil

    from cfmodel.config import ScoreConfig
    from cfmodel.lists import load_inputs
    from cfmodel.storage import Storage

    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    cfg = ScoreConfig(model=str(copy), data=prepared_dir)
    shutil.rmtree(copy / "item_factors")
    with pytest.raises(InputError, match=r"model: no item_factors/; the train output is damaged"):
        load_inputs(spark, Storage(spark), cfg)
    (copy / "_SUCCESS").unlink()
    with pytest.raises(InputError, match=r"model: no _SUCCESS; the train output is incomplete"):
        load_inputs(spark, Storage(spark), cfg)


@pytest.mark.fault(fault='an unwritable output location', exit='2', survives='-', rerun='-')
def test_an_output_that_cannot_be_written_is_a_one_line_error_naming_it(tmp_path):
    """A location under a file (what a read-only or wrong path looks like to a root test process, for which
    permissions do not apply): exit code 2, the path named, nothing half-made. Broken version caught: an
    OSError traceback from deep in a stage."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out"
    with pytest.raises(InputError, match=rf"{out}: cannot write there \(.*\); is the output location writable") \
            as err:
        with atomic_output(LocalStorage(), str(out), overwrite=True):
            pytest.fail("the body must not run")
    assert err.value.exit_code == 2 and len(str(err.value).splitlines()) == 1
