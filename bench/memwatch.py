"""Run a command and measure the peak memory of its process tree (summed PSS, :func:`tree_memory`)."""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from typing import List

import psutil


@dataclass
class Watched:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mib: float


def tree_memory(root: psutil.Process) -> dict:
    """Bytes of memory ``root``'s process tree holds: in all, of its Java processes (``jvm``), of ``root``
    itself (``driver``) and of the other descendants (``workers``: Python workers, for a Spark job), each
    the sum of the processes' proportional set sizes (PSS: a page shared by n processes counts 1/n in each,
    so the tree's sum is the physical memory it holds); ``rss``: the sum of resident sizes, which counts a
    page once per process sharing it (forked Python workers share most of theirs): an upper bound."""
    parts = {"all": 0, "jvm": 0, "driver": 0, "workers": 0, "rss": 0}
    for p in [root] + root.children(recursive=True):
        try:
            info = p.memory_full_info()
            kind = "driver" if p.pid == root.pid else "jvm" if "java" in p.name() else "workers"
        except psutil.Error:
            continue
        parts["all"] += info.pss
        parts[kind] += info.pss
        parts["rss"] += info.rss
    return parts


def run_watched(cmd: List[str], interval: float = 0.2, **kwargs) -> Watched:
    """Run ``cmd`` to completion, sampling the memory (PSS, :func:`tree_memory`) of it and all its descendants."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tree_memory(root)["all"])
            except psutil.Error:
                pass
            done.wait(interval)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    done.set()
    watcher.join()
    return Watched(proc.returncode, out, err, time.perf_counter() - started, peak[0] / 2**20)
