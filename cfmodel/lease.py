"""A lease on an output path: one attempt at a time writes it.

A scheduler may start a second attempt of a job while the first is still alive (an Airflow retry after a
lost heartbeat, a manual rerun). Whoever writes ``<path>`` first holds ``<path>.lease``, a small JSON file
(owner host and pid, start, last heartbeat) refreshed every :data:`HEARTBEAT_S` seconds by a daemon thread.
A second attempt meets a live lease and stops at once with :class:`LeaseHeldError` (exit code 6); a lease
whose holder is gone (a dead pid on this host, or no heartbeat for :data:`TTL_S` seconds from another host)
is taken over, and only then may the taker clean up what the holder left (its temporaries).

The lease is advisory and as good as the file system's consistency: on HDFS and local disks a reader sees
the latest write; on an eventually consistent store two takers could both miss each other for a moment,
which the re-read after writing narrows but cannot close.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

from cfmodel.errors import CfError, InputError, out_of_space, space_error

LOG = logging.getLogger(__name__)
SUFFIX = ".lease"
# A holder rewrites its heartbeat this often; another host's lease is dead after TTL_S without one.
HEARTBEAT_S = 15.0
TTL_S = 120.0


class LeaseHeldError(CfError):
    """Another live attempt is writing the same output."""

    exit_code = 6


def lease_path(path: str) -> str:
    return path.rstrip("/") + SUFFIX


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def holder_alive(held: Dict[str, Any], now: Optional[float] = None) -> bool:
    """Whether the holder of ``held`` may still be writing: on this host, its process is alive; on another,
    its last heartbeat is under :data:`TTL_S` old."""
    now = time.time() if now is None else now
    if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int):
        return _pid_alive(held["pid"])
    return now - float(held.get("heartbeat", 0)) < TTL_S


def _read(storage: Any, path: str) -> Optional[Dict[str, Any]]:
    try:
        held = json.loads(storage.read_text(path))
    except Exception:  # unreadable or half-written: nobody can be holding it properly
        return None
    return held if isinstance(held, dict) else None


def _describe(held: Dict[str, Any]) -> str:
    age = time.time() - float(held.get("heartbeat", 0))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(held.get("started", 0))))
    return f"host {held.get('host')}, pid {held.get('pid')}, started {started}, last heartbeat {age:.0f} s ago"


@contextmanager
def lease(storage: Any, path: str) -> Iterator[Dict[str, Any]]:
    """Hold the lease on ``path`` while the block runs; yields the lease record.

    ``storage`` is a :class:`cfmodel.storage.Storage` or :class:`~cfmodel.storage.LocalStorage`.

    Raises
    ------
    LeaseHeldError
        Another live attempt holds it.
    """
    file = lease_path(path)
    if storage.exists(file):
        held = _read(storage, file)
        if held is not None and held.get("host") == socket.gethostname() and held.get("pid") == os.getpid():
            yield held  # this process holds it already (a stage inside its own run): nested, not a rival
            return
        if held is not None and holder_alive(held):
            raise LeaseHeldError(f"{path.rstrip('/')} is being written by another attempt ({_describe(held)}); "
                                 f"wait for it to finish, or for its lease {file} to expire")
        LOG.warning("taking over the lease on %s from a holder that is gone (%s)", path,
                    _describe(held) if held else "unreadable lease file")
    now = time.time()
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "started": now,
            "heartbeat": now}
    try:
        storage.write_text(file, json.dumps(mine))
    except Exception as exc:  # the first write to the output's place: a read-only or wrong location, or full
        if out_of_space(exc):
            raise space_error(path.rstrip("/")) from exc
        java = getattr(exc, "java_exception", None)  # a Hadoop file system's error, through py4j
        text = str(java.toString()) if java is not None else str(exc)
        detail = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(f"{path.rstrip('/')}: cannot write there ({detail}); is the output location "
                         f"writable?") from exc
    read_back = _read(storage, file)
    if not read_back or read_back.get("token") != mine["token"]:
        raise LeaseHeldError(f"{path.rstrip('/')}: another attempt took the lease at the same moment "
                             f"({_describe(read_back) if read_back else 'unknown'})")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(storage, file, mine, stop), daemon=True,
                            name=f"lease-heartbeat {file}")
    beat.start()
    try:
        yield mine
    finally:
        stop.set()
        beat.join(timeout=5)
        current = _read(storage, file)
        if current and current.get("token") == mine["token"]:
            storage.delete(file)


def _heartbeat(storage: Any, file: str, mine: Dict[str, Any], stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            storage.write_text(file, json.dumps({**mine, "heartbeat": time.time()}))
        except Exception as exc:  # a transient store error: the next beat tries again
            LOG.warning("could not renew the lease %s: %s", file, exc)
