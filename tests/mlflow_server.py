"""A real MLflow tracking server for the tests (SQLite backend, a free local port), started in the background.

It takes seconds to come up (gunicorn and MLflow's imports), so conftest starts it once the run's collection
selects a test marked ``mlflow``, and the first such test waits only for what is left of its start. The
server runs in its own process group (its gunicorn workers go with it) and is stopped when the run ends.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cluster import free_port, stop_groups

MLFLOW = Path(sys.executable).parent / "mlflow"


class MlflowServer:
    """Starts ``mlflow server`` on construction; :meth:`ready` returns its URI once it answers."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cfmodel-mlflow-"))
        port = free_port()
        self.uri = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--default-artifact-root", f"file://{self.root}/artifacts", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def ready(self, timeout: float) -> str:
        """The server's URI once its health check answers; RuntimeError if it exits or stays silent."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the MLflow server exited with {self.proc.returncode}")
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200:
                    return self.uri
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"the MLflow server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        """Its process group stopped (tests/cluster.py's stop_groups), its files removed."""
        stop_groups([self.proc])
        shutil.rmtree(self.root, ignore_errors=True)
