"""A real Spark standalone cluster on 127.0.0.1: one master and N workers from the installed pyspark.

Every process it starts runs in its own process group and is stopped by pid
(SIGTERM, then SIGKILL) when the context exits, test failure or not, with the
executors the workers launched.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List

SPARK_CLASS = str(Path(sys.executable).parent / "spark-class")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_groups(procs: List[subprocess.Popen]) -> None:
    """SIGTERM to each process's group (last started first); SIGKILL to a process still running after 20 s, then
    to whatever is left of its group (children it launched)."""
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + 20
    for p in reversed(procs):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        try:  # executors the worker launched share its process group
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{path.name}: process exited with {proc.returncode}:\n{path.read_text()[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"{path.name}: no '{text}' after {timeout:.0f} s:\n{path.read_text()[-3000:]}")


@contextmanager
def standalone_cluster(workdir: Path, workers: int = 2, cores: int = 1, memory: str = "1g") -> Iterator[str]:
    """Yield the master URL ``spark://127.0.0.1:<port>`` of a running cluster."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_NO_DAEMONIZE": "1", "SPARK_LOCAL_IP": "127.0.0.1"}
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: List[subprocess.Popen] = []

    def start(name: str, *args: str) -> Path:
        log = workdir / f"{name}.log"
        with open(log, "w") as fh:
            procs.append(subprocess.Popen([SPARK_CLASS, *args], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))
        return log

    try:
        log = start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                    "--webui-port", str(free_port()))
        _wait_for(log, "I have been elected leader", procs[0], 90)
        for i in range(workers):
            log = start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                        "--cores", str(cores), "--memory", memory, "--webui-port", str(free_port()),
                        "--work-dir", str(workdir / f"work{i}"), url)
            _wait_for(log, "Successfully registered with master", procs[-1], 90)
        yield url
    finally:
        stop_groups(procs)


def _pids_under(workdir: Path, wanted: Callable[[Path], bool]) -> List[int]:
    """The processes whose working directory lies under ``workdir`` and whose ``/proc/<pid>`` entry passes
    ``wanted`` (one that ends meanwhile, or is not ours to read, is left out)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd").startswith(str(workdir)) and wanted(entry):
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


def executor_pids(workdir: Path) -> List[int]:
    """The executor JVMs this cluster's workers run now (their working directory lies under ``workdir``)."""
    return _pids_under(workdir, lambda entry: b"CoarseGrainedExecutorBackend" in (entry / "cmdline").read_bytes())


def training_pids(workdir: Path, rank: int) -> List[int]:
    """The training processes of ``rank`` (torchrun's children, started by a barrier task of an executor
    whose working directory lies under ``workdir``)."""
    def is_rank(entry: Path) -> bool:
        env = dict(kv.split(b"=", 1) for kv in (entry / "environ").read_bytes().split(b"\0") if b"=" in kv)
        return env.get(b"RANK") == str(rank).encode() and b"TORCHELASTIC_RUN_ID" in env

    return _pids_under(workdir, is_rank)
