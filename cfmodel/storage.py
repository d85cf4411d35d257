"""File-system operations through Hadoop's FileSystem API.

Paths are URLs (``file://``, ``hdfs://``, ``s3a://``) or plain paths on Spark's
default file system; going through Hadoop means the same code works for each,
on the driver, without assuming a local disk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from cfmodel.errors import InputError, OutputExistsError, out_of_space, space_error
from cfmodel.lease import lease
from cfmodel.urls import to_url

LOG = logging.getLogger(__name__)
TMP_MARK = ".tmp-"
# An overwritten output waits here until the new one is in place.
OLD_MARK = ".old-"


class Storage:
    """Driver-side file operations on any Hadoop-supported file system."""

    def __init__(self, spark: SparkSession) -> None:
        self._jvm = spark.sparkContext._jvm
        self._hconf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, path: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, path: str) -> Any:
        return self._path(path).getFileSystem(self._hconf)

    def exists(self, path: str) -> bool:
        return bool(self._fs(path).exists(self._path(path)))

    def is_dir(self, path: str) -> bool:
        return bool(self._fs(path).getFileStatus(self._path(path)).isDirectory())

    def delete(self, path: str) -> None:
        self._fs(path).delete(self._path(path), True)

    def rename(self, src: str, dst: str) -> None:
        if not self._fs(src).rename(self._path(src), self._path(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def qualify(self, path: str) -> str:
        """The fully qualified URL of a path (``file:/abs/...`` for local paths)."""
        return str(self._fs(path).makeQualified(self._path(path)).toString())

    def _file_statuses(self, path: str) -> List[Any]:
        """Hadoop ``FileStatus`` of each data file under ``path`` (itself if a file), sorted by name."""
        fs = self._fs(path)
        status = fs.getFileStatus(self._path(path))
        if not status.isDirectory():
            return [status]
        found = []
        it = fs.listFiles(self._path(path), True)
        while it.hasNext():
            st = it.next()
            if not st.getPath().getName().startswith(("_", ".")):
                found.append(st)
        return sorted(found, key=lambda st: str(st.getPath().toString()))

    def list_files(self, path: str) -> List[str]:
        """Data files under ``path`` (itself if a file), skipping ``_``/``.`` entries, sorted."""
        return [str(st.getPath().toString()) for st in self._file_statuses(path)]

    def list_dirs(self, path: str) -> List[str]:
        """Immediate subdirectories of ``path`` (empty when it does not exist)."""
        if not self.exists(path):
            return []
        return sorted(str(st.getPath().toString()) for st in self._fs(path).listStatus(self._path(path))
                      if st.isDirectory())

    def listing(self, path: str) -> List[dict]:
        """``name, size, modified`` of each data file under ``path``: a cheap change detector."""
        return [{"name": str(st.getPath().toString()), "size": int(st.getLen()),
                 "modified": int(st.getModificationTime())} for st in self._file_statuses(path)]

    def copy(self, src: str, dst: str) -> None:
        """Copy a file or directory tree (between any two Hadoop file systems)."""
        util = self._jvm.org.apache.hadoop.fs.FileUtil
        if not util.copy(self._fs(src), self._path(src), self._fs(dst), self._path(dst), False, True, self._hconf):
            raise OSError(f"could not copy {src} to {dst}")

    def copy_from_local(self, local: str, dst: str) -> None:
        """Upload a local file or directory tree to ``dst`` (any Hadoop file system)."""
        self._fs(dst).copyFromLocalFile(False, True, self._path("file://" + os.path.abspath(local)), self._path(dst))

    def copy_to_local(self, src: str, local: str) -> None:
        """Download a file or directory tree from any Hadoop file system to a local path."""
        self._fs(src).copyToLocalFile(False, self._path(src), self._path("file://" + os.path.abspath(local)), True)

    def size(self, path: str) -> int:
        return int(self._fs(path).getFileStatus(self._path(path)).getLen())

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def write_bytes(self, path: str, data: bytes) -> None:
        out = self._fs(path).create(self._path(path), True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def read_bytes(self, path: str) -> bytes:
        """Whole content of a small file (metadata, reports); Py4J returns byte[] by value."""
        stream = self._fs(path).open(self._path(path))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write_json(self, path: str, obj: Any) -> None:
        self.write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_text(path))



def input_fingerprint(spark: SparkSession, storage: Storage, path: str, files: List[str], method: str,
                      chunk_mb: int = 8) -> str:
    """SHA-256 fingerprint of the input files by ``prepare.checksum``: ``content`` (:func:`content_sha256`)
    or ``listing`` (names, sizes and modification times: nothing is read, for inputs too large to read
    twice)."""
    if method == "listing":
        wanted = set(files)
        entries = [e for e in storage.listing(path) if e["name"] in wanted]
        text = "".join(f"{e['name'].rsplit('/', 1)[-1]}:{e['size']}:{e['modified']}\n"
                       for e in sorted(entries, key=lambda e: e["name"]))
        return "listing:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return content_sha256(spark, files, chunk_mb << 20)


def content_sha256(spark: SparkSession, paths: List[str], chunk_bytes: int = 8 << 20) -> str:
    """SHA-256 fingerprint of the files' contents, hashed on the executors.

    One Spark task per file reads it in ``chunk_bytes`` chunks (through
    pyarrow's file systems, as the train stage's loaders read the prepared
    Parquet) and hashes them with ``hashlib``: memory stays at one chunk
    whatever the file's size, and only the file's name goes to the task and
    its digest comes back. Each file's digest is the ``sha256sum`` of its
    bytes; the fingerprint is the SHA-256 of the sorted ``name:digest`` lines,
    so it does not depend on the order Spark lists the files in.
    """
    if not paths:
        return hashlib.sha256(b"").hexdigest()
    results = (spark.sparkContext.parallelize(paths, len(paths))
               .map(lambda url: file_sha256(url, chunk_bytes)).collect())
    failed = next((error for _, _, error in sorted(results) if error), None)
    if failed:
        raise InputError(failed)
    digests = [(url, digest) for url, digest, _ in results]
    lines = "".join(f"{url.rsplit('/', 1)[-1]}:{digest}\n" for url, digest in sorted(digests))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def file_sha256(url: str, chunk_bytes: int) -> Tuple[str, Optional[str], Optional[str]]:
    """(url, hex SHA-256 of its bytes or None, why it could not be read or None), read ``chunk_bytes`` at
    a time. It runs in a Spark task, so a file it cannot read comes back as a message for the driver to
    raise, not as an exception wrapped in Spark's."""
    from pyarrow import fs  # imported in the task, where the hashing runs

    # pyarrow names Hadoop's s3a:// s3://.
    arrow_url = "s3://" + url.split("://", 1)[-1] if urlparse(url).scheme == "s3a" else to_url(url)
    try:
        filesystem, path = fs.FileSystem.from_uri(arrow_url)
        digest = hashlib.sha256()
        with filesystem.open_input_stream(path, compression=None) as stream:
            for chunk in iter(lambda: stream.read(chunk_bytes), b""):
                digest.update(chunk)
    except (OSError, ValueError) as exc:
        return url, None, (f"{url}: cannot read it to fingerprint its content ({exc}); "
                           f"set prepare.checksum: listing to fingerprint by names, sizes and times")
    return url, digest.hexdigest(), None


class LocalStorage:
    """The subset of :class:`Storage` that :func:`atomic_output` uses, on the local disk without Spark
    (for the train stage, which runs no Spark session)."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def delete(self, path: str) -> None:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def write_text(self, path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)

    def read_text(self, path: str) -> str:
        with open(path, encoding="utf-8") as fh:
            return fh.read()

    def list_dirs(self, path: str) -> List[str]:
        if not os.path.isdir(path):
            return []
        return sorted(os.path.join(path, n) for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))


def _siblings(storage: Any, path: str, mark: str) -> List[str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    return [d for d in storage.list_dirs(parent or ".") if d.rstrip("/").rsplit("/", 1)[-1].startswith(name + mark)]


def remove_stale_temporaries(storage: Any, path: str) -> List[str]:
    """Clean up after a crashed attempt (``kill -9``, a lost node) on ``path``; call it holding the lease.

    A crash between the two renames of an overwrite left ``path`` missing and its previous content at
    ``<path>.old-*``: that content is put back. Then the ``<path>.tmp-*`` and ``<path>.old-*`` siblings are
    deleted (:func:`atomic_output` removes its own on any error it sees, but a killed process sees none; on
    HDFS they would pile up). Returns the names deleted.
    """
    path = path.rstrip("/")
    olds = _siblings(storage, path, OLD_MARK)
    if olds and not storage.exists(path):
        kept = max(olds)
        LOG.warning("restoring %s from %s: an overwrite was interrupted between its renames", path, kept)
        storage.rename(kept, path)
        olds.remove(kept)
    stale = _siblings(storage, path, TMP_MARK) + olds
    for d in stale:
        LOG.info("removing %s, left by a crashed attempt", d)
        storage.delete(d)
    return stale


@contextmanager
def atomic_output(storage: Any, path: str, overwrite: bool) -> Iterator[str]:
    """Yield a temporary sibling of ``path`` to write into; publish it by rename on success, holding the
    lease on ``path`` throughout (:mod:`cfmodel.lease`: a second live attempt stops at once).

    A crash or error leaves no half-written ``path``: the temporary directory is removed and ``path`` keeps
    its previous content. ``_SUCCESS`` is written last into the temporary directory: it is the commit point
    readers check (on object stores, where a rename is a copy, the only one). An overwrite moves the old
    output aside, moves the new one in, then deletes the old, so a crash at any point leaves one complete
    copy (:func:`remove_stale_temporaries` puts it back). ``storage`` is a :class:`Storage` or a
    :class:`LocalStorage`.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false (checked before any work).
    LeaseHeldError
        Another live attempt is writing ``path``.
    """
    path = path.rstrip("/")
    if storage.exists(path) and not overwrite:
        raise OutputExistsError(f"output already exists: {path} (pass --overwrite to replace it)")
    with lease(storage, path):
        remove_stale_temporaries(storage, path)
        tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex[:12]}"
        try:
            try:
                yield tmp
                storage.write_text(f"{tmp}/_SUCCESS", "")
            except Exception as exc:
                if out_of_space(exc):
                    raise space_error(path) from exc
                raise
            if storage.exists(path):
                old = f"{path}{OLD_MARK}{uuid.uuid4().hex[:12]}"
                storage.rename(path, old)
                storage.rename(tmp, path)
                storage.delete(old)
            else:
                storage.rename(tmp, path)
        finally:
            if storage.exists(tmp):
                storage.delete(tmp)
