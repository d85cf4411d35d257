"""Run a command and measure the peak summed resident memory of its process tree."""
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


def run_watched(cmd: List[str], interval: float = 0.2, **kwargs) -> Watched:
    """Run ``cmd`` to completion, sampling the RSS of it and all its descendants."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root] + root.children(recursive=True)
                total = 0
                for p in tree:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
            except psutil.Error:
                pass
            done.wait(interval)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    done.set()
    watcher.join()
    return Watched(proc.returncode, out, err, time.perf_counter() - started, peak[0] / 2**20)
